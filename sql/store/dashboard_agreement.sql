-- Label counts on the images rated by two or more raters, for the dashboard's
-- agreement panel. Agreement statistics depend only on how many labels of each
-- category every image got, so images are grouped by those counts: each combination
-- comes once with its number of images, a few rows even on a store of 100,000 images.
-- Columns follow the categories of each task in their declared order (usable:
-- usable, reject; quality: good, medium, bad), then the number of images and the
-- number of raters with any label in force (the agreement report's rater set).
-- One pass over rater_labels: the grouping sets count per image and per rater at once.
WITH grouped AS MATERIALIZED (
    SELECT GROUPING(image_id) AS per_rater,
           count(*) FILTER (WHERE usable_label = 'usable') AS usable,
           count(*) FILTER (WHERE usable_label = 'reject') AS reject,
           count(*) FILTER (WHERE quality_label = 'good') AS good,
           count(*) FILTER (WHERE quality_label = 'medium') AS medium,
           count(*) FILTER (WHERE quality_label = 'bad') AS bad,
           count(*) AS labels
    FROM rater_labels
    GROUP BY GROUPING SETS ((image_id), (rater))
)
SELECT usable, reject, good, medium, bad, count(*) AS images,
       (SELECT count(*) FROM grouped WHERE per_rater = 1) AS raters
FROM grouped
WHERE per_rater = 0 AND labels >= 2
GROUP BY ALL
ORDER BY ALL;
