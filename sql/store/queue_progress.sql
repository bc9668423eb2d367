-- Progress of every rater in every queue.
SELECT q.name AS queue, i.rater,
       count(*) AS assigned,
       count(*) FILTER (WHERE i.shared) AS shared,
       count(l.rating_id) AS rated,
       count(*) - count(l.rating_id) AS remaining
FROM queue_items i
JOIN queues q USING (queue_id)
LEFT JOIN ratings_latest l ON l.image_id = i.image_id AND l.rater = i.rater
GROUP BY q.queue_id, q.name, i.rater
ORDER BY q.queue_id, i.rater;
