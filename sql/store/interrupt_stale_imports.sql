-- Imports still marked running when a new one begins: the new one holds the store for
-- writing, so nothing else is importing; the old one was killed (SIGKILL, a second
-- Ctrl-C, a power cut) before it could record how it ended.
UPDATE imports
SET status = 'interrupted',
    finished_at = current_timestamp
WHERE status = 'running';
