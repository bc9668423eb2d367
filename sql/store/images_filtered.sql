-- The images matching the browser's filters, ordered by image_id, with how many
-- raters have a rating in force on each.
-- $1 sequence, $2 status, $3 rated (true/false), $4 subject search: NULL = any.
WITH rated AS (
    SELECT image_id, count(*) AS raters FROM ratings_latest GROUP BY image_id
)
SELECT i.image_id, coalesce(i.subject, ''), coalesce(i.session, ''),
       coalesce(i.suffix, ''), i.status,
       CASE WHEN i.dim_x IS NULL THEN '' ELSE concat_ws('x', i.dim_x, i.dim_y, i.dim_z) END,
       coalesce(i.orientation, ''), coalesce(r.raters, 0)
FROM images i
LEFT JOIN rated r USING (image_id)
WHERE (CAST($1 AS VARCHAR) IS NULL OR i.suffix = $1)
  AND (CAST($2 AS VARCHAR) IS NULL OR i.status = $2)
  AND (CAST($3 AS BOOLEAN) IS NULL OR (coalesce(r.raters, 0) > 0) = $3)
  AND (CAST($4 AS VARCHAR) IS NULL OR i.subject ILIKE '%' || $4 || '%')
