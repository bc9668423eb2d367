-- The staged ratings, saved: the CHECK constraints of ratings apply here, and a time
-- left empty is the save's.
INSERT INTO ratings (
    rating_id, image_id, rater, usable, reject_reason, gado, motion, contrast, noise,
    quality, code, comment, confidence, time_ms, review_later, undoes, protocol_version,
    source, rated_at
)
SELECT rating_id, image_id, rater, usable, reject_reason, gado, motion, contrast, noise,
       quality, code, comment, confidence, time_ms, review_later, undoes,
       protocol_version, source,
       coalesce(CAST(rated_at_text AS TIMESTAMPTZ), current_timestamp)
FROM stage_ratings;
DELETE FROM stage_ratings;
