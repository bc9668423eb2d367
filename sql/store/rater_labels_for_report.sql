-- Each rater's task labels in force, with the image's scanner (view image_scanners).
-- $1: BIDS suffix to keep, or NULL for every image.
SELECT l.image_id, l.rater, l.usable_label, l.quality_label, l.gado_label, s.scanner
FROM rater_labels l
JOIN images i USING (image_id)
JOIN image_scanners s USING (image_id)
WHERE $1::VARCHAR IS NULL OR i.suffix = $1
ORDER BY l.image_id, l.rater
