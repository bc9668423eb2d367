-- The runs that predicted something: what the export's model_run levels describe.
SELECT run_id, kind, task, method, preset, status, metrics, split_id,
       strftime(started_at, '%Y-%m-%dT%H:%M:%SZ') AS started_at
FROM runs
WHERE run_id IN (SELECT DISTINCT run_id FROM predictions)
ORDER BY run_id
