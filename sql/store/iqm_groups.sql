-- The groups of the `iqm_outliers` view (migration 008) without its per-image rows:
-- per sequence, scanner and screening metric, the median, MAD and number of images of
-- the newest metric version, and that version. The dashboard reads this once and
-- scores the selected image against it, instead of computing the whole view for
-- every image shown. Must group exactly as the view does (a test compares them).
WITH newest AS (
    SELECT max(iqm_version) AS iqm_version FROM iqms
),
measured AS (
    SELECT i.suffix, coalesce(s.scanner, 'unknown') AS scanner,
           q.snr_total, q.snrd_total, q.cnr, q.cjv, q.efc, q.fber, q.wm2max, q.qi_1,
           q.fwhm_avg, q.inu_range
    FROM iqms q
    JOIN images i USING (image_id)
    LEFT JOIN image_scanners s USING (image_id)
    WHERE q.error IS NULL AND q.iqm_version = (SELECT iqm_version FROM newest)
),
long AS (
    UNPIVOT measured
    ON snr_total, snrd_total, cnr, cjv, efc, fber, wm2max, qi_1, fwhm_avg, inu_range
    INTO NAME metric VALUE value
)
SELECT suffix, scanner, metric, median(value), mad(value), count(value),
       (SELECT iqm_version FROM newest)
FROM long
GROUP BY suffix, scanner, metric;
