-- Metrics of this version for ok images, measured on their current content, with the
-- image's file name and sequence for MRIQC-style group tables. The metric columns
-- follow in the table's order, which is `iqm::COLUMNS`.
SELECT i.path, coalesce(i.suffix, 'unknown') AS suffix,
       q.* EXCLUDE (image_id, iqm_version, sha256, contrast, computed_at, seconds, error)
FROM iqms q
JOIN images i ON i.image_id = q.image_id
WHERE q.iqm_version = ?
  AND i.status = 'ok'
  AND q.error IS NULL
  AND q.sha256 IS NOT DISTINCT FROM i.sha256
ORDER BY i.path;
