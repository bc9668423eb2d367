-- Why an image sits in each queue that holds it: the queue, the rater, the queue's
-- strategy, run and triage band, and the item's reason. $1: image id.
SELECT q.name, i.rater, i.shared, q.strategy, q.run_id, q.triage_rate, q.accept_below,
       q.reject_from, i.reason, i.score, i.domain_distance
FROM queue_items i
JOIN queues q USING (queue_id)
WHERE i.image_id = $1
ORDER BY q.queue_id, i.rater
