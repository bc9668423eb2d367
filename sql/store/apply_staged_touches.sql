-- Same content under a new modification time: remember the time, nothing else.
UPDATE images SET mtime_ns = t.mtime_ns
FROM stage_touches AS t
WHERE images.image_id = t.image_id;
