-- A part loaded by part_load.sql, by image.
SELECT run_id, image_id, task, label, probabilities, error, domain_target, reason
FROM part
ORDER BY image_id
