-- One run's stored predictions, by image.
SELECT image_id, task, label, probabilities, error
FROM predictions
WHERE run_id = ?
ORDER BY image_id
