-- Jobs still marked running when a process opens the store for writing were cut off
-- with the dashboard that ran them.
UPDATE jobs
SET status = 'failed',
    error = 'cut off while running (the dashboard that ran it ended)',
    finished_at = current_timestamp
WHERE status IN ('queued', 'running');
