-- How many images match the browser's filters, from the per-image summaries (see
-- images_page_summary.sql; same $1..$6).
SELECT count(*)
FROM images
WHERE (CAST($1 AS VARCHAR) IS NULL OR suffix = $1)
  AND (CAST($2 AS VARCHAR) IS NULL OR status = $2)
  AND (CAST($3 AS BOOLEAN) IS NULL OR (raters_in_force > 0) = $3)
  AND (CAST($4 AS VARCHAR) IS NULL OR subject ILIKE '%' || $4 || '%')
  AND (CAST($5 AS VARCHAR) IS NULL OR usable_prediction = $5)
  AND (CAST($6 AS BOOLEAN) IS NULL OR NOT $6
       OR (raters_usable > 0 AND usable_prediction <> 'usable')
       OR (raters_reject > 0 AND usable_prediction <> 'reject'));
