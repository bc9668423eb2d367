-- One run's stored predictions, by image.
SELECT image_id, task, label, probabilities, error, domain_target, reason
FROM predictions
WHERE run_id = ?
ORDER BY image_id
