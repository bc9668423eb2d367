-- Images that could not be indexed, with the reason, newest first.
-- Usage: cdwqc sql -f sql/queries/import_failures.sql [--format csv]
SELECT rel_path, error, root, updated_at
FROM images
WHERE status = 'failed'
ORDER BY updated_at DESC, rel_path;
