-- For a rater without a queue: every usable image they have not rated yet.
SELECT image_id
FROM images
WHERE status = 'ok'
  AND image_id NOT IN (SELECT image_id FROM ratings_latest WHERE rater = $1)
ORDER BY image_id
LIMIT $2;
