-- Whether each image with metrics of the newest version has an outlying screening
-- metric in its sequence and scanner group (`iqm_outliers`, migration 008): one row per
-- such image. Images without those metrics have no row.
SELECT image_id, bool_or(outlier) AS outlier
FROM iqm_outliers
GROUP BY image_id
