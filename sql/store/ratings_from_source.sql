-- What a rating file (its source, 'import:<sha256>') already saved: ratings per rater
-- and image, and the first save, so that importing it again saves only what is new.
SELECT rater, image_id, count(*) AS n,
       strftime(min(saved_at), '%Y-%m-%d %H:%M:%S') AS first_saved
FROM ratings
WHERE source = ?
GROUP BY rater, image_id
