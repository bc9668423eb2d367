-- The images matching the browser's filters, ordered by image_id, with how many
-- raters have a rating in force on each and the newest `usable` prediction.
-- $1 sequence, $2 status, $3 rated (true/false), $4 subject search,
-- $5 predicted usable label, $6 true = only images where that prediction differs from
-- a rater's usable label in force: NULL = any.
-- Raters with a rating in force are counted as the distinct raters of an image's
-- live (neither undoing nor undone) ratings, one row each in `ratings_latest`: a
-- grouping, cheaper than the view's ranking of every rating.
WITH rated AS (
    SELECT image_id, count(DISTINCT rater) AS raters
    FROM ratings
    WHERE undoes IS NULL
      AND rating_id NOT IN (SELECT undoes FROM ratings WHERE undoes IS NOT NULL)
    GROUP BY image_id
),
predicted AS (
    SELECT image_id, label FROM (
        SELECT image_id, label,
               row_number() OVER (PARTITION BY image_id
                                  ORDER BY predicted_at DESC, run_id) AS newest
        FROM predictions
        WHERE task = 'usable' AND label IS NOT NULL
    ) WHERE newest = 1
),
disagreeing AS (
    SELECT DISTINCT l.image_id
    FROM rater_labels l JOIN predicted p USING (image_id)
    WHERE l.usable_label <> p.label
)
SELECT i.image_id, coalesce(i.subject, ''), coalesce(i.session, ''),
       coalesce(i.suffix, ''), i.status,
       CASE WHEN i.dim_x IS NULL THEN '' ELSE concat_ws('x', i.dim_x, i.dim_y, i.dim_z) END,
       coalesce(i.orientation, ''), coalesce(r.raters, 0), coalesce(p.label, '')
FROM images i
LEFT JOIN rated r USING (image_id)
LEFT JOIN predicted p USING (image_id)
WHERE (CAST($1 AS VARCHAR) IS NULL OR i.suffix = $1)
  AND (CAST($2 AS VARCHAR) IS NULL OR i.status = $2)
  AND (CAST($3 AS BOOLEAN) IS NULL OR (coalesce(r.raters, 0) > 0) = $3)
  AND (CAST($4 AS VARCHAR) IS NULL OR i.subject ILIKE '%' || $4 || '%')
  AND (CAST($5 AS VARCHAR) IS NULL OR p.label = $5)
  AND (CAST($6 AS BOOLEAN) IS NULL OR NOT $6
       OR i.image_id IN (SELECT image_id FROM disagreeing))
