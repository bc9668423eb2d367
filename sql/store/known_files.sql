-- What the store already knows of the files under one import root.
SELECT path, image_id, file_size, mtime_ns, sha256, status
FROM images
WHERE root = ?;
