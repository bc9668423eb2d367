-- Metrics of this version for ok images, measured on their current content, with each
-- image's scanner group (vendor and field strength, as the outlier view groups them):
-- the features of the IQM-only classifier. The metric columns follow in the table's
-- order, which is `iqm::COLUMNS`.
SELECT q.image_id, coalesce(s.scanner, 'unknown') AS scanner,
       q.* EXCLUDE (image_id, iqm_version, sha256, contrast, computed_at, seconds, error)
FROM iqms q
JOIN images i ON i.image_id = q.image_id
LEFT JOIN image_scanners s ON s.image_id = q.image_id
WHERE q.iqm_version = ?
  AND i.status = 'ok'
  AND q.error IS NULL
  AND q.sha256 IS NOT DISTINCT FROM i.sha256
ORDER BY q.image_id;
