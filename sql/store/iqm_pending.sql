-- Stored 3D images that lack metrics of this version for their current content, or
-- whose last try failed (all ok 3D images when the second parameter is true).
SELECT i.image_id, i.path, i.suffix, i.sha256, i.file_size, i.mtime_ns
FROM images i
LEFT JOIN iqms q
  ON q.image_id = i.image_id AND q.iqm_version = ? AND q.sha256 IS NOT DISTINCT FROM i.sha256
WHERE i.status = 'ok'
  AND i.n_volumes = 1
  AND (q.image_id IS NULL OR q.error IS NOT NULL OR ?)
ORDER BY i.image_id;
