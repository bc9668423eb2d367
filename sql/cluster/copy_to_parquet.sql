-- Writes a table of the in-memory database to a Parquet file (the table and the quoted
-- path are filled in: COPY takes no parameters). Into the file itself, which the caller
-- has just created exclusively: over an existing file DuckDB otherwise writes `tmp_NAME`
-- beside it first, through any link planted under that name.
COPY {table} TO {path} (FORMAT parquet, USE_TMP_FILE false)
