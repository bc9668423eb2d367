-- Per-image summaries the image browser filters on, so that its rated and model
-- filters read `images` alone instead of every rating and prediction:
--   raters_in_force    raters with a rating in force on the image (`ratings_latest`)
--   raters_usable      of those, how many label it usable (`rater_labels`)
--   raters_reject      ... and how many reject it
--   usable_prediction  the label of the image's newest `usable` prediction with a
--                      label (newest `predicted_at`, then smallest `run_id`), NULL without
-- The store layer recomputes an image's summaries in the same transaction as every
-- rating, undo and prediction it writes for it; ad-hoc SQL that may write marks them
-- stale first and repairs them when it ends, and while they are stale the browser reads
-- the ratings and predictions themselves (`image_summary_state`).
ALTER TABLE images ADD COLUMN raters_in_force INTEGER DEFAULT 0;
ALTER TABLE images ADD COLUMN raters_usable INTEGER DEFAULT 0;
ALTER TABLE images ADD COLUMN raters_reject INTEGER DEFAULT 0;
ALTER TABLE images ADD COLUMN usable_prediction VARCHAR;
-- DuckDB adds a column with a default but without a constraint; the constraint after.
ALTER TABLE images ALTER COLUMN raters_in_force SET NOT NULL;
ALTER TABLE images ALTER COLUMN raters_usable SET NOT NULL;
ALTER TABLE images ALTER COLUMN raters_reject SET NOT NULL;

-- One row. The summaries are trusted only while `stale` is false and the row counts
-- the store layer advanced with each of its writes still match the tables: rows written
-- by another tool (a script, the duckdb shell) then show as a count that differs.
CREATE TABLE image_summary_state (
    stale        BOOLEAN NOT NULL,
    ratings      BIGINT NOT NULL,
    predictions  BIGINT NOT NULL
);
INSERT INTO image_summary_state
SELECT false, (SELECT count(*) FROM ratings), (SELECT count(*) FROM predictions);

-- The summaries of the images already stored.
UPDATE images SET raters_in_force = v.raters, raters_usable = v.usable,
                  raters_reject = v.reject
FROM (
    SELECT image_id, count(*)::INTEGER AS raters,
           count(*) FILTER (WHERE usable)::INTEGER AS usable,
           count(*) FILTER (WHERE NOT usable)::INTEGER AS reject
    FROM (
        SELECT image_id, rater, arg_max_null(usable, rating_id) AS usable
        FROM ratings
        WHERE undoes IS NULL
          AND rating_id NOT IN (SELECT undoes FROM ratings WHERE undoes IS NOT NULL)
        GROUP BY image_id, rater
    )
    GROUP BY image_id
) AS v
WHERE images.image_id = v.image_id;

UPDATE images SET usable_prediction = p.label
FROM (
    SELECT image_id, first(label ORDER BY predicted_at DESC, run_id) AS label
    FROM predictions
    WHERE task = 'usable' AND label IS NOT NULL
    GROUP BY image_id
) AS p
WHERE images.image_id = p.image_id;
