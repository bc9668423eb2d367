-- One page of the image browser from `images` alone: the rated and model filters and
-- the page's rater counts and predicted labels read the per-image summaries (migration
-- 011), which the store keeps equal to what images_filtered.sql computes from every
-- rating and prediction. Same columns and filters as images_filtered.sql:
-- $1 sequence, $2 status, $3 rated (true/false), $4 subject search,
-- $5 predicted usable label, $6 true = only images where that prediction differs from
-- a rater's usable label in force: NULL = any; $7 limit, $8 offset.
-- The page's ids are cut first, so that only its rows are formatted (the last page of
-- a million images would otherwise format every row before the offset).
WITH page_ids AS (
    SELECT image_id
    FROM images
    WHERE (CAST($1 AS VARCHAR) IS NULL OR suffix = $1)
      AND (CAST($2 AS VARCHAR) IS NULL OR status = $2)
      AND (CAST($3 AS BOOLEAN) IS NULL OR (raters_in_force > 0) = $3)
      AND (CAST($4 AS VARCHAR) IS NULL OR subject ILIKE '%' || $4 || '%')
      AND (CAST($5 AS VARCHAR) IS NULL OR usable_prediction = $5)
      AND (CAST($6 AS BOOLEAN) IS NULL OR NOT $6
           OR (raters_usable > 0 AND usable_prediction <> 'usable')
           OR (raters_reject > 0 AND usable_prediction <> 'reject'))
    ORDER BY image_id
    LIMIT $7 OFFSET $8
)
SELECT i.image_id, coalesce(i.subject, ''), coalesce(i.session, ''),
       coalesce(i.suffix, ''), i.status,
       CASE WHEN i.dim_x IS NULL THEN '' ELSE concat_ws('x', i.dim_x, i.dim_y, i.dim_z) END,
       coalesce(i.orientation, ''), i.raters_in_force, coalesce(i.usable_prediction, '')
FROM images i
JOIN page_ids USING (image_id)
ORDER BY i.image_id;
