-- The rater's most recent save still in force (the one an undo withdraws).
SELECT rating_id, image_id
FROM ratings_latest
WHERE rater = ?
ORDER BY saved_at DESC, rating_id DESC
LIMIT 1;
