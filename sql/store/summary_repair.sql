-- Recomputes every image's summaries (migration 011) from all ratings and predictions
-- and writes those that differ, then marks the summaries fresh: run after ad-hoc SQL
-- that may have written, and on opening a store whose summaries are marked stale.
UPDATE images SET raters_in_force = f.raters, raters_usable = f.usable,
                  raters_reject = f.reject, usable_prediction = f.label
FROM (
    WITH in_force AS (
        SELECT image_id, rater, arg_max_null(usable, rating_id) AS usable
        FROM ratings
        WHERE undoes IS NULL
          AND rating_id NOT IN (SELECT undoes FROM ratings WHERE undoes IS NOT NULL)
        GROUP BY image_id, rater
    ),
    votes AS (
        SELECT image_id, count(*)::INTEGER AS raters,
               count(*) FILTER (WHERE usable)::INTEGER AS usable,
               count(*) FILTER (WHERE NOT usable)::INTEGER AS reject
        FROM in_force
        GROUP BY image_id
    ),
    newest AS (
        SELECT image_id, first(label ORDER BY predicted_at DESC, run_id) AS label
        FROM predictions
        WHERE task = 'usable' AND label IS NOT NULL
        GROUP BY image_id
    )
    SELECT i.image_id, coalesce(v.raters, 0) AS raters, coalesce(v.usable, 0) AS usable,
           coalesce(v.reject, 0) AS reject, n.label
    FROM images i
    LEFT JOIN votes v USING (image_id)
    LEFT JOIN newest n USING (image_id)
    WHERE i.raters_in_force IS DISTINCT FROM coalesce(v.raters, 0)
       OR i.raters_usable IS DISTINCT FROM coalesce(v.usable, 0)
       OR i.raters_reject IS DISTINCT FROM coalesce(v.reject, 0)
       OR i.usable_prediction IS DISTINCT FROM n.label
) AS f
WHERE images.image_id = f.image_id;

DELETE FROM image_summary_state;
INSERT INTO image_summary_state
SELECT false, (SELECT count(*) FROM ratings), (SELECT count(*) FROM predictions);
