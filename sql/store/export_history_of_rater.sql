-- One rater's saves and undoes, oldest first (`ratings export --history --rater`): the
-- columns of export_history.sql, but `rating_id` and `undoes` number the rater's own
-- saves 1, 2, ...: the store's ids count every rater's saves, and their gaps would tell
-- one rater how many ratings the others saved, and when. The command fills in the
-- history query (export_history.sql) and the rater (a validated name: no quote).
WITH own AS (
    SELECT * FROM ({history}) WHERE rater = '{rater}'
),
numbered AS (
    SELECT rating_id AS id, row_number() OVER (ORDER BY rating_id) AS n FROM own
)
SELECT own.* REPLACE (mine.n AS rating_id, undone.n AS undoes)
FROM own
JOIN numbered mine ON mine.id = own.rating_id
LEFT JOIN numbered undone ON undone.id = own.undoes
ORDER BY own.rating_id
