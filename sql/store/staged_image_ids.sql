-- The ids of the images of the staged import batch (after apply_staged_images.sql).
SELECT i.image_id FROM images AS i JOIN stage_images AS s ON i.path = s.path;
