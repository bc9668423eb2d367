-- The columns of the import staging table, in order (they follow `images`).
SELECT column_name
FROM duckdb_columns()
WHERE table_name = 'stage_images' AND schema_name = 'main' AND database_name = 'temp'
ORDER BY column_index
