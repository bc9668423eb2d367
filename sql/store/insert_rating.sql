-- One save of one rating: a new row, never an update.
INSERT INTO ratings (
    image_id, rater, usable, reject_reason, gado, motion, contrast, noise, quality, code,
    comment, confidence, time_ms, review_later, undoes, protocol_version, source, rated_at
) VALUES (
    ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
    ?, ?, ?, ?, ?, ?, ?, coalesce(CAST(? AS TIMESTAMPTZ), current_timestamp)
)
RETURNING rating_id;
