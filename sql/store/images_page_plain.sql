-- One page of the image browser when its filters touch only `images` (sequence,
-- status, subject search): the page's ids are cut from `images` first, then only
-- those rows are looked up in the ratings and predictions, so a page costs about
-- the same on a store of a million images as on one of a thousand. Same columns as
-- images_filtered.sql; raters with a rating in force are counted as the distinct
-- raters of the image's live (neither undoing nor undone) ratings, which is what
-- `ratings_latest` keeps one row each of.
-- $1 sequence, $2 status, $3 subject search: NULL = any; $4 limit, $5 offset.
WITH page_ids AS (
    SELECT image_id
    FROM images
    WHERE (CAST($1 AS VARCHAR) IS NULL OR suffix = $1)
      AND (CAST($2 AS VARCHAR) IS NULL OR status = $2)
      AND (CAST($3 AS VARCHAR) IS NULL OR subject ILIKE '%' || $3 || '%')
    ORDER BY image_id
    LIMIT $4 OFFSET $5
),
rated AS (
    SELECT image_id, count(DISTINCT rater) AS raters
    FROM ratings
    WHERE image_id IN (SELECT image_id FROM page_ids)
      AND undoes IS NULL
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
          AND image_id IN (SELECT image_id FROM page_ids)
    ) WHERE newest = 1
)
SELECT i.image_id, coalesce(i.subject, ''), coalesce(i.session, ''),
       coalesce(i.suffix, ''), i.status,
       CASE WHEN i.dim_x IS NULL THEN '' ELSE concat_ws('x', i.dim_x, i.dim_y, i.dim_z) END,
       coalesce(i.orientation, ''), coalesce(r.raters, 0), coalesce(p.label, '')
FROM images i
JOIN page_ids USING (image_id)
LEFT JOIN rated r USING (image_id)
LEFT JOIN predicted p USING (image_id)
ORDER BY i.image_id;
