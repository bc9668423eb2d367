-- Images per domain, set and sequence of a training run's split. $1: split id.
SELECT sp.domain, sp."set", coalesce(i.suffix, 'unknown') AS suffix, count(*) AS images
FROM splits sp
LEFT JOIN images i USING (image_id)
WHERE sp.split_id = $1
GROUP BY ALL ORDER BY ALL
