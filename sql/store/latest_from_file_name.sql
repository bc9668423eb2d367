-- For each rater and image, the latest rating saved from a version of this rating file
-- (the same path; this version included, when it was imported before): its rating
-- values, compared with the file's rows so that rows unchanged since are not saved
-- again.
WITH files AS (
    SELECT DISTINCT source FROM rating_files WHERE file_name = ?
),
saved AS (
    SELECT r.*,
           row_number() OVER (PARTITION BY r.rater, r.image_id
                              ORDER BY r.rating_id DESC) AS rank_in_pair
    FROM ratings r
    JOIN files f ON starts_with(r.source, f.source || ':')
    WHERE r.undoes IS NULL
)
SELECT rater, image_id, usable, reject_reason, gado, motion, contrast, noise, quality,
       code, comment, confidence, time_ms
FROM saved
WHERE rank_in_pair = 1
