-- One image's newest image quality metrics (its highest metric version) and the group
-- `iqm_outliers` scores it in (sequence, and scanner or 'unknown'), for the dashboard's
-- detail pane. Every table is filtered on the image id itself, not only joined on it,
-- so the filter reaches each scan and a million-image store reads only the row groups
-- that can hold the image (about 3 ms). The ten screening metrics in the view's order
-- (migration 008). $1 image id.
SELECT q.iqm_version, q.error, i.suffix, coalesce(s.scanner, 'unknown'),
       q.snr_total, q.snrd_total, q.cnr, q.cjv, q.efc, q.fber, q.wm2max, q.qi_1,
       q.fwhm_avg, q.inu_range
FROM iqms q
JOIN images i ON i.image_id = q.image_id
JOIN image_scanners s ON s.image_id = q.image_id
WHERE q.image_id = $1 AND i.image_id = $1 AND s.image_id = $1
ORDER BY q.iqm_version DESC
LIMIT 1;
