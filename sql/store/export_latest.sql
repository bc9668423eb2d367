-- The ratings in force, one row per (image, rater), in the native rating-file format.
SELECT i.subject, i.session, i.acq, i.run, i.suffix, i.rel_path AS path,
       r.rater, r.code, r.usable, r.reject_reason, r.gado, r.motion, r.contrast, r.noise, r.quality,
       r.comment, r.confidence, r.time_ms, r.review_later,
       CASE WHEN epoch_us(r.rated_at) % 1000000 = 0
            THEN strftime(r.rated_at, '%Y-%m-%dT%H:%M:%SZ')
            ELSE strftime(r.rated_at, '%Y-%m-%dT%H:%M:%S.%fZ') END AS rated_at
FROM ratings_latest r
JOIN images i USING (image_id)
ORDER BY i.rel_path, r.rater
