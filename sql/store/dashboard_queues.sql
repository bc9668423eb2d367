-- Items and pending items per queue and rater, for the dashboard.
WITH items AS (
    SELECT queue_id, rater, count(*) AS n FROM queue_items GROUP BY ALL
),
pending AS (
    SELECT queue_id, rater, count(*) AS n FROM queue_pending GROUP BY ALL
)
SELECT q.name, items.rater, items.n, coalesce(pending.n, 0)
FROM items
JOIN queues q USING (queue_id)
LEFT JOIN pending USING (queue_id, rater)
ORDER BY q.name, items.rater;
