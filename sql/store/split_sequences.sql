-- The BIDS suffixes of a split's images, per domain.
SELECT DISTINCT s.domain, i.suffix
FROM splits s
JOIN images i USING (image_id)
WHERE s.split_id = ? AND i.suffix IS NOT NULL
ORDER BY s.domain, i.suffix;
