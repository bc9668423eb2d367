-- Runs still marked running when a process opens the store for writing: nothing can be
-- running them (a worker writes only through the store's one writer), so they were cut
-- off; they are marked interrupted, which `cdwqc train --resume` continues.
UPDATE runs
SET status = 'interrupted',
    error = 'cut off while running (the process that ran it ended)',
    finished_at = current_timestamp
WHERE status = 'running';
