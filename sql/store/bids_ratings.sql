-- The ratings in force, one row per (image, rater), for the BIDS-derivatives export.
SELECT i.path, i.subject, i.session, r.rater, r.usable, r.reject_reason, r.gado,
       r.motion, r.contrast, r.noise, r.quality, r.confidence, r.time_ms,
       CASE WHEN epoch_us(r.rated_at) % 1000000 = 0
            THEN strftime(r.rated_at, '%Y-%m-%dT%H:%M:%SZ')
            ELSE strftime(r.rated_at, '%Y-%m-%dT%H:%M:%S.%fZ') END AS rated_at, r.comment,
       r.protocol_version
FROM ratings_latest r
JOIN images i USING (image_id)
WHERE r.usable IS NOT NULL
ORDER BY i.path, r.rater
