-- A part's rows into the `part` table of part_create.sql, column by name: a part
-- written before a column was added (the domain output, the reason) loads with it empty.
INSERT INTO part BY NAME SELECT * FROM read_parquet(?)
