-- What the store already knows of the files under one import root: those this root
-- stored, and those an import of a folder above or below it stored there.
SELECT path, image_id, file_size, mtime_ns, sha256, status
FROM images
WHERE root = ?1 OR starts_with(path, ?1 || '/');
