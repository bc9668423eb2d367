-- The rater's last save still in force (the one an undo withdraws): the highest
-- rating_id, i.e. save order, whatever the clock said when it was saved.
SELECT rating_id, image_id
FROM ratings_latest
WHERE rater = ?
ORDER BY rating_id DESC
LIMIT 1;
