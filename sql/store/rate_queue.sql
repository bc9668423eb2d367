-- A rater's next images from their queues, in queue order, with the queue's name and
-- strategy.
SELECT p.image_id, p.queue, q.strategy
FROM queue_pending p
JOIN queues q USING (queue_id)
WHERE p.rater = ?
ORDER BY p.queue_id, p.position
LIMIT ?;
