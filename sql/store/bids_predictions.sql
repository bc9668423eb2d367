-- Every stored prediction with its image, for the BIDS-derivatives export; the class
-- probabilities as a JSON array in the task's class order.
SELECT i.path, i.subject, i.session, p.run_id, p.task, p.label,
       to_json(p.probabilities)::VARCHAR AS probabilities, p.error,
       strftime(p.predicted_at, '%Y-%m-%dT%H:%M:%SZ') AS predicted_at, p.reason
FROM predictions p
JOIN images i USING (image_id)
ORDER BY i.path, p.run_id, p.task
