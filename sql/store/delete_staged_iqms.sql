-- The metrics of every image a staged batch rewrites: its new content brings its own
-- (inserted after this), or none, and the old content's would be stale.
DELETE FROM iqms
WHERE image_id IN (
    SELECT i.image_id FROM images i JOIN temp.stage_images s ON s.path = i.path
);
