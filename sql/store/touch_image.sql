-- Same content under a new modification time: remember the time, nothing else.
UPDATE images SET mtime_ns = ? WHERE image_id = ?;
