-- Every image's absolute path, by image id.
SELECT image_id, path FROM images
