-- The images matching the browser's filters, from the per-image summaries, unpaged:
-- the same columns and $1..$6 as images_page_summary.sql, for queries that filter
-- the list further (the IQM outlier filter, store/dashboard.rs).
SELECT i.image_id, coalesce(i.subject, ''), coalesce(i.session, ''),
       coalesce(i.suffix, ''), i.status,
       CASE WHEN i.dim_x IS NULL THEN '' ELSE concat_ws('x', i.dim_x, i.dim_y, i.dim_z) END,
       coalesce(i.orientation, ''), i.raters_in_force, coalesce(i.usable_prediction, '')
FROM images i
WHERE (CAST($1 AS VARCHAR) IS NULL OR i.suffix = $1)
  AND (CAST($2 AS VARCHAR) IS NULL OR i.status = $2)
  AND (CAST($3 AS BOOLEAN) IS NULL OR (i.raters_in_force > 0) = $3)
  AND (CAST($4 AS VARCHAR) IS NULL OR i.subject ILIKE '%' || $4 || '%')
  AND (CAST($5 AS VARCHAR) IS NULL OR i.usable_prediction = $5)
  AND (CAST($6 AS BOOLEAN) IS NULL OR NOT $6
       OR (i.raters_usable > 0 AND i.usable_prediction <> 'usable')
       OR (i.raters_reject > 0 AND i.usable_prediction <> 'reject'))
