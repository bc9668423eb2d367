-- The files an import part answers for, how, and which stored image a touch names.
SELECT path, kind, touch_image_id
FROM read_parquet(?)
ORDER BY path
