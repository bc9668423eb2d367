-- A job started from the dashboard: its worker's arguments and the run it writes.
INSERT INTO jobs (kind, args, status, run_id, progress, started_at)
VALUES (?, ?, 'running', ?, 0, current_timestamp)
RETURNING job_id;
