-- A run's predicted probabilities for one task on readable images, with each image's
-- subject (its path when it has none) and the domain head's probability of the target
-- domain (SSDA networks; NULL otherwise), to rank images for a rating queue, and
-- whether the label is a reject given because the image does not register.
-- $1: run id, $2: task, $3: BIDS suffix to keep, or NULL for every image.
SELECT p.image_id, coalesce(i.subject, i.path) AS subject,
       CAST(p.probabilities AS VARCHAR) AS probabilities, p.domain_target,
       p.reason IS NOT NULL AS not_registered
FROM predictions p
JOIN images i USING (image_id)
WHERE p.run_id = $1 AND p.task = $2 AND p.error IS NULL AND p.probabilities IS NOT NULL
  AND i.status = 'ok' AND ($3::VARCHAR IS NULL OR i.suffix = $3)
ORDER BY p.image_id
