-- The source ('import:<sha256>') of the version of this rating file imported last.
SELECT source FROM rating_files WHERE file_name = ?
ORDER BY imported_at DESC, rowid DESC
LIMIT 1
