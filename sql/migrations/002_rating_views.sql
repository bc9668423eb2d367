-- Views over the append-only ratings history.

-- The rating in force for each (image, rater): the newest save that no undo has
-- withdrawn. An undo is a row with `undoes` set; it withdraws that rating, so the
-- rater's previous rating of the image (if any) is in force again.
CREATE VIEW ratings_latest AS
WITH withdrawn AS (
    SELECT undoes AS rating_id FROM ratings WHERE undoes IS NOT NULL
),
live AS (
    SELECT r.*
    FROM ratings r
    WHERE r.undoes IS NULL
      AND r.rating_id NOT IN (SELECT rating_id FROM withdrawn)
)
SELECT * EXCLUDE (rank_in_pair)
FROM (
    SELECT live.*,
           row_number() OVER (PARTITION BY image_id, rater
                              ORDER BY saved_at DESC, rating_id DESC) AS rank_in_pair
    FROM live
)
WHERE rank_in_pair = 1;

-- Rating progress per rater.
CREATE VIEW rater_progress AS
SELECT r.name AS rater, r.role,
       count(l.rating_id) AS images_rated,
       count(l.rating_id) FILTER (WHERE l.usable = false) AS rejected,
       count(l.rating_id) FILTER (WHERE l.review_later) AS review_later,
       max(l.saved_at) AS last_saved
FROM raters r
LEFT JOIN ratings_latest l ON l.rater = r.name
GROUP BY ALL
ORDER BY rater;

-- Each rater's labels per prediction task, from the ratings in force:
--   usable:  'usable' or 'reject'
--   quality: 'good' / 'medium' / 'bad' from the worst of motion, contrast, noise
--            (usable images only; NULL for a reject)
--   gado:    'gado' or 'no_gado' (usable images with a gado answer only)
CREATE VIEW rater_labels AS
SELECT image_id, rater, rating_id, saved_at,
       CASE WHEN usable THEN 'usable' ELSE 'reject' END AS usable_label,
       CASE WHEN NOT usable THEN NULL
            WHEN quality IS NOT NULL THEN quality
            WHEN greatest(motion, contrast, noise) = 0 THEN 'good'
            WHEN greatest(motion, contrast, noise) = 1 THEN 'medium'
            ELSE 'bad' END AS quality_label,
       CASE WHEN NOT usable OR gado IS NULL THEN NULL
            WHEN gado THEN 'gado' ELSE 'no_gado' END AS gado_label
FROM ratings_latest
WHERE usable IS NOT NULL;
