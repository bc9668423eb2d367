-- The files an import part answers for, and how.
SELECT path, kind
FROM read_parquet(?)
ORDER BY path
