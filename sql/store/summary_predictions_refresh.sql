-- Recomputes `usable_prediction` (migration 011) of the images $1 (a BIGINT[] written
-- as text) from their predictions, inside the transaction that wrote them: the label of
-- the newest `usable` prediction with a label (newest predicted_at, then smallest
-- run_id), NULL without one.
UPDATE images SET usable_prediction = f.label
FROM (
    WITH ids AS (SELECT DISTINCT unnest(CAST($1 AS BIGINT[])) AS image_id),
    newest AS (
        SELECT image_id, first(label ORDER BY predicted_at DESC, run_id) AS label
        FROM predictions
        WHERE image_id IN (SELECT image_id FROM ids)
          AND task = 'usable' AND label IS NOT NULL
        GROUP BY image_id
    )
    SELECT ids.image_id, n.label
    FROM ids LEFT JOIN newest n USING (image_id)
) AS f
WHERE images.image_id = f.image_id;
