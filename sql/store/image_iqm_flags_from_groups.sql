-- Each image's outlier flag exactly as `image_iqm_flags.sql` gives it, computed
-- against the groups the dashboard has read already (`temp.iqm_group_stats`, filled
-- from `iqm_groups.sql`) instead of computing every group's median again: one pass over
-- the metrics, the view's arithmetic in its order (migration 008). An image of the
-- groups' metric version with at least one screening metric has a row; others have
-- none, as in the view. A test compares the two on every image.
WITH stats AS (
    SELECT suffix, scanner, max(iqm_version) AS iqm_version,
           max(group_median) FILTER (WHERE metric = 'snr_total') AS snr_total_median,
           max(group_mad) FILTER (WHERE metric = 'snr_total') AS snr_total_mad,
           max(group_images) FILTER (WHERE metric = 'snr_total') AS snr_total_images,
           max(group_median) FILTER (WHERE metric = 'snrd_total') AS snrd_total_median,
           max(group_mad) FILTER (WHERE metric = 'snrd_total') AS snrd_total_mad,
           max(group_images) FILTER (WHERE metric = 'snrd_total') AS snrd_total_images,
           max(group_median) FILTER (WHERE metric = 'cnr') AS cnr_median,
           max(group_mad) FILTER (WHERE metric = 'cnr') AS cnr_mad,
           max(group_images) FILTER (WHERE metric = 'cnr') AS cnr_images,
           max(group_median) FILTER (WHERE metric = 'cjv') AS cjv_median,
           max(group_mad) FILTER (WHERE metric = 'cjv') AS cjv_mad,
           max(group_images) FILTER (WHERE metric = 'cjv') AS cjv_images,
           max(group_median) FILTER (WHERE metric = 'efc') AS efc_median,
           max(group_mad) FILTER (WHERE metric = 'efc') AS efc_mad,
           max(group_images) FILTER (WHERE metric = 'efc') AS efc_images,
           max(group_median) FILTER (WHERE metric = 'fber') AS fber_median,
           max(group_mad) FILTER (WHERE metric = 'fber') AS fber_mad,
           max(group_images) FILTER (WHERE metric = 'fber') AS fber_images,
           max(group_median) FILTER (WHERE metric = 'wm2max') AS wm2max_median,
           max(group_mad) FILTER (WHERE metric = 'wm2max') AS wm2max_mad,
           max(group_images) FILTER (WHERE metric = 'wm2max') AS wm2max_images,
           max(group_median) FILTER (WHERE metric = 'qi_1') AS qi_1_median,
           max(group_mad) FILTER (WHERE metric = 'qi_1') AS qi_1_mad,
           max(group_images) FILTER (WHERE metric = 'qi_1') AS qi_1_images,
           max(group_median) FILTER (WHERE metric = 'fwhm_avg') AS fwhm_avg_median,
           max(group_mad) FILTER (WHERE metric = 'fwhm_avg') AS fwhm_avg_mad,
           max(group_images) FILTER (WHERE metric = 'fwhm_avg') AS fwhm_avg_images,
           max(group_median) FILTER (WHERE metric = 'inu_range') AS inu_range_median,
           max(group_mad) FILTER (WHERE metric = 'inu_range') AS inu_range_mad,
           max(group_images) FILTER (WHERE metric = 'inu_range') AS inu_range_images
    FROM temp.iqm_group_stats
    GROUP BY suffix, scanner
)
SELECT q.image_id,
    (coalesce(g.snr_total_images >= 5 AND g.snr_total_mad > 0
                AND abs(0.6745 * (q.snr_total - g.snr_total_median) / g.snr_total_mad) > 3.5, false)
    OR coalesce(g.snrd_total_images >= 5 AND g.snrd_total_mad > 0
                AND abs(0.6745 * (q.snrd_total - g.snrd_total_median) / g.snrd_total_mad) > 3.5, false)
    OR coalesce(g.cnr_images >= 5 AND g.cnr_mad > 0
                AND abs(0.6745 * (q.cnr - g.cnr_median) / g.cnr_mad) > 3.5, false)
    OR coalesce(g.cjv_images >= 5 AND g.cjv_mad > 0
                AND abs(0.6745 * (q.cjv - g.cjv_median) / g.cjv_mad) > 3.5, false)
    OR coalesce(g.efc_images >= 5 AND g.efc_mad > 0
                AND abs(0.6745 * (q.efc - g.efc_median) / g.efc_mad) > 3.5, false)
    OR coalesce(g.fber_images >= 5 AND g.fber_mad > 0
                AND abs(0.6745 * (q.fber - g.fber_median) / g.fber_mad) > 3.5, false)
    OR coalesce(g.wm2max_images >= 5 AND g.wm2max_mad > 0
                AND abs(0.6745 * (q.wm2max - g.wm2max_median) / g.wm2max_mad) > 3.5, false)
    OR coalesce(g.qi_1_images >= 5 AND g.qi_1_mad > 0
                AND abs(0.6745 * (q.qi_1 - g.qi_1_median) / g.qi_1_mad) > 3.5, false)
    OR coalesce(g.fwhm_avg_images >= 5 AND g.fwhm_avg_mad > 0
                AND abs(0.6745 * (q.fwhm_avg - g.fwhm_avg_median) / g.fwhm_avg_mad) > 3.5, false)
    OR coalesce(g.inu_range_images >= 5 AND g.inu_range_mad > 0
                AND abs(0.6745 * (q.inu_range - g.inu_range_median) / g.inu_range_mad) > 3.5, false)) AS outlier
FROM iqms q
JOIN images i USING (image_id)
LEFT JOIN image_scanners s USING (image_id)
JOIN stats g ON g.suffix = i.suffix AND g.scanner = coalesce(s.scanner, 'unknown')
WHERE q.error IS NULL AND q.iqm_version = g.iqm_version
  AND (q.snr_total IS NOT NULL OR q.snrd_total IS NOT NULL OR q.cnr IS NOT NULL OR q.cjv IS NOT NULL OR q.efc IS NOT NULL OR q.fber IS NOT NULL OR q.wm2max IS NOT NULL OR q.qi_1 IS NOT NULL OR q.fwhm_avg IS NOT NULL OR q.inu_range IS NOT NULL)
