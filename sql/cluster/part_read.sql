-- A part written from part_create.sql, by image.
SELECT run_id, image_id, task, label, probabilities, error, domain_target
FROM read_parquet(?)
ORDER BY image_id
