-- One stored split, in image order.
SELECT image_id, subject, domain, "set", label
FROM splits
WHERE split_id = ?
ORDER BY image_id;
