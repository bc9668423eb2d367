-- Per-scanner outliers among the image quality metrics: for each image, sequence and
-- scanner (vendor and field strength, `image_scanners`), each screening metric's robust
-- z-score against the images of the same sequence and scanner, 0.6745 (x - median) / MAD
-- (Iglewicz and Hoaglin's modified z), and `outlier` where |z| > 3.5 in a group of at
-- least 5 images with a non-zero MAD. Images without a vendor form the group 'unknown'.
CREATE VIEW iqm_outliers AS
WITH measured AS (
    SELECT q.image_id, i.suffix, coalesce(s.scanner, 'unknown') AS scanner,
           q.snr_total, q.snrd_total, q.cnr, q.cjv, q.efc, q.fber, q.wm2max, q.qi_1,
           q.fwhm_avg, q.inu_range
    FROM iqms q
    JOIN images i USING (image_id)
    LEFT JOIN image_scanners s USING (image_id)
    WHERE q.error IS NULL AND q.iqm_version = (SELECT max(iqm_version) FROM iqms)
),
long AS (
    UNPIVOT measured
    ON snr_total, snrd_total, cnr, cjv, efc, fber, wm2max, qi_1, fwhm_avg, inu_range
    INTO NAME metric VALUE value
),
groups AS (
    SELECT suffix, scanner, metric, median(value) AS group_median, mad(value) AS group_mad,
           count(value) AS group_images
    FROM long
    GROUP BY ALL
)
SELECT l.image_id, l.suffix, l.scanner, l.metric, l.value, g.group_median, g.group_mad,
       g.group_images,
       CASE WHEN g.group_mad > 0 THEN 0.6745 * (l.value - g.group_median) / g.group_mad END
           AS robust_z,
       coalesce(g.group_images >= 5 AND g.group_mad > 0
                AND abs(0.6745 * (l.value - g.group_median) / g.group_mad) > 3.5, false)
           AS outlier
FROM long l
JOIN groups g USING (suffix, scanner, metric);
