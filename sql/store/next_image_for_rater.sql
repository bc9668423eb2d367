-- The next image for a rater. $1 rater, $2 queue name or NULL, $3 image ids to skip
-- (a list literal). Queue items come first, in the rater's order; a rater with no queue
-- item left gets readable images they have not rated, oldest first.
WITH skipped AS (
    SELECT unnest(CAST($3 AS BIGINT[])) AS image_id
),
from_queue AS (
    SELECT p.image_id, p.queue, 0 AS pass, p.queue_id AS k1, p.position AS k2
    FROM queue_pending p
    WHERE p.rater = $1 AND ($2::VARCHAR IS NULL OR p.queue = $2)
      AND p.image_id NOT IN (SELECT image_id FROM skipped)
),
unrated AS (
    SELECT i.image_id, NULL::VARCHAR AS queue, 1 AS pass, 0 AS k1, i.image_id AS k2
    FROM images i
    WHERE i.status = 'ok' AND $2::VARCHAR IS NULL
      AND NOT EXISTS (SELECT 1 FROM queue_items q WHERE q.rater = $1)
      AND NOT EXISTS (SELECT 1 FROM ratings_latest l WHERE l.image_id = i.image_id AND l.rater = $1)
      AND i.image_id NOT IN (SELECT image_id FROM skipped)
),
candidates AS (
    SELECT * FROM from_queue UNION ALL SELECT * FROM unrated
)
SELECT c.image_id, c.queue,
       CASE WHEN i.subject IS NULL THEN i.rel_path
            ELSE concat_ws('_', 'sub-' || i.subject, 'ses-' || i.session, 'acq-' || i.acq,
                           'run-' || i.run, i.suffix) END AS label,
       (SELECT count(*) FROM candidates) AS remaining
FROM candidates c
JOIN images i USING (image_id)
ORDER BY c.pass, c.k1, c.k2
LIMIT 1;
