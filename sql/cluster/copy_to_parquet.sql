-- Writes a table of the in-memory database to a Parquet file ({table} and the quoted
-- {path} are filled in: COPY takes no parameters).
COPY {table} TO {path} (FORMAT parquet)
