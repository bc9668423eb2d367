-- The latest training and inference runs, for the dashboard.
SELECT run_id, kind, coalesce(task, ''), status,
       strftime(started_at, '%m-%d %H:%M')
FROM runs
ORDER BY started_at DESC, run_id
LIMIT 8;
