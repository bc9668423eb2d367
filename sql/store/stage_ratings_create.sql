-- A connection-local staging table for one save of many ratings: the Appender fills it
-- in save order with ids already drawn from rating_id_seq, and
-- apply_staged_ratings.sql moves it into ratings with one statement. Its columns take
-- their types from ratings, so they follow the schema.
CREATE TEMP TABLE IF NOT EXISTS stage_ratings AS
SELECT rating_id, image_id, rater, usable, reject_reason, gado, motion, contrast, noise,
       quality, code, comment, confidence, time_ms, review_later, undoes,
       protocol_version, source, CAST(NULL AS VARCHAR) AS rated_at_text
FROM ratings
LIMIT 0;
