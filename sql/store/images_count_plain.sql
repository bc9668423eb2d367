-- How many images match the browser's filters when they touch only `images`
-- (see images_page_plain.sql): $1 sequence, $2 status, $3 subject search.
SELECT count(*)
FROM images
WHERE (CAST($1 AS VARCHAR) IS NULL OR suffix = $1)
  AND (CAST($2 AS VARCHAR) IS NULL OR status = $2)
  AND (CAST($3 AS VARCHAR) IS NULL OR subject ILIKE '%' || $3 || '%');
