-- Whether a rater has any queue items at all (pending or done).
SELECT count(*) > 0 FROM queue_items WHERE rater = ?;
