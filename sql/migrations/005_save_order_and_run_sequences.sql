-- 1. The rating in force is the last one saved, in save order (`rating_id`, from a
--    sequence), not the newest by a clock: a clock that jumped back, or times copied
--    from a rating file, must never make an older save win. `rater_progress`,
--    `rater_labels` and `queue_pending` read this view and follow it.
CREATE OR REPLACE VIEW ratings_latest AS
WITH withdrawn AS (
    SELECT undoes AS rating_id FROM ratings WHERE undoes IS NOT NULL
),
live AS (
    SELECT r.*
    FROM ratings r
    WHERE r.undoes IS NULL
      AND r.rating_id NOT IN (SELECT rating_id FROM withdrawn)
)
SELECT * EXCLUDE (rank_in_pair)
FROM (
    SELECT live.*,
           row_number() OVER (PARTITION BY image_id, rater
                              ORDER BY rating_id DESC) AS rank_in_pair
    FROM live
)
WHERE rank_in_pair = 1;

-- 2. The sequences (BIDS suffixes) a training run learns from, so that
--    `cdwqc train --resume` continues on them whatever the command line's defaults.
--    NULL for runs recorded before this migration (resume then reads them off the
--    run's split).
ALTER TABLE runs ADD COLUMN source_sequence VARCHAR;
ALTER TABLE runs ADD COLUMN target_sequence VARCHAR;
