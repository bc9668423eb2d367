-- ?1 new rating ids from the sequence every save draws from. Their order across rows is
-- not the rows' order; sorted, they are later than every id saved before.
SELECT nextval('rating_id_seq') FROM range(?1);
