-- How a dashboard job ended: completed, failed or cancelled.
UPDATE jobs
SET status = ?, progress = ?, error = ?, finished_at = current_timestamp
WHERE job_id = ?;
