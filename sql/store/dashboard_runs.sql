-- The latest training and inference runs, for the dashboard, with a training run's
-- balanced accuracy on its held-out test subjects.
SELECT run_id, kind, coalesce(task, ''), status,
       strftime(started_at, '%m-%d %H:%M'),
       coalesce(printf('%.3f', TRY_CAST(json_extract(metrics, '$.test_balanced_accuracy') AS DOUBLE)), '')
FROM runs
ORDER BY started_at DESC, run_id
LIMIT 8;
