-- A rater's next images from their queues, in queue order.
SELECT image_id FROM queue_pending WHERE rater = ? ORDER BY queue_id, position LIMIT ?;
