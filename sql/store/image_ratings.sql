-- The ratings in force on one image, one per rater.
SELECT rater, code, usable, gado, motion, contrast, noise, review_later,
       strftime(saved_at, '%Y-%m-%d %H:%M')
FROM ratings_latest
WHERE image_id = ?
ORDER BY rater;
