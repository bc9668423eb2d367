-- A file that vanished keeps its row (ratings point at it) but is marked missing.
UPDATE images
SET status = 'missing', updated_at = current_timestamp
WHERE image_id = ? AND status <> 'missing';
