-- Every run's prediction for one image, newest first.
SELECT run_id, task, label,
       CASE WHEN label IS NULL THEN NULL
            ELSE list_max(probabilities) END,
       error, strftime(predicted_at, '%Y-%m-%d %H:%M'), reason
FROM predictions
WHERE image_id = ?
ORDER BY predicted_at DESC, run_id, task;
