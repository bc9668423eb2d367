-- A run's predictions for one task, with each image's subject, scanner and set in the
-- run's split (NULL when the image was not in it, e.g. predicted later by `infer`).
-- $1: run id, $2: task, $3: the run's split id.
SELECT p.image_id, coalesce(i.subject, i.path) AS subject, p.label,
       CAST(p.probabilities AS VARCHAR) AS probabilities, p.error, sp."set", s.scanner,
       p.reason
FROM predictions p
JOIN images i USING (image_id)
JOIN image_scanners s USING (image_id)
LEFT JOIN splits sp ON sp.split_id = $3 AND sp.image_id = p.image_id
WHERE p.run_id = $1 AND p.task = $2
ORDER BY p.image_id
