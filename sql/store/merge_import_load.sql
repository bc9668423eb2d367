-- A checked sharded import, loaded into temp tables inside the merge's transaction,
-- and what the merge does with each file the work list named ({parts} and {list} are
-- filled in with quoted paths: read_parquet takes no parameters here).
--   merged     the store already holds what the part says (a merge run before)
--   moved      the store's row changed since the work list was frozen (another import
--              ran): left as the store has it
--   add/update/touch/missing  written now; unchanged: nothing to write
CREATE OR REPLACE TEMP TABLE merge_parts AS
SELECT * FROM read_parquet({parts}, union_by_name = true);

CREATE OR REPLACE TEMP TABLE merge_list AS
SELECT path, state, known_image_id, known_size, known_mtime_ns, known_sha256, known_status
FROM read_parquet({list});

CREATE OR REPLACE TEMP TABLE merge_plan AS
SELECT
    l.path,
    p.status AS new_status,
    CASE
        WHEN l.state = 'unchanged' OR p.kind = 'unchanged' THEN 'unchanged'
        WHEN p.kind = 'upsert' AND i.image_id IS NOT NULL
            AND i.file_size = p.file_size AND i.mtime_ns = p.mtime_ns
            AND i.sha256 IS NOT DISTINCT FROM p.sha256 AND i.status = p.status THEN 'merged'
        WHEN p.kind = 'touch' AND i.mtime_ns = p.mtime_ns THEN 'merged'
        WHEN l.state = 'gone' AND (i.image_id IS NULL OR i.status = 'missing') THEN 'merged'
        WHEN (l.known_image_id IS NULL) <> (i.image_id IS NULL) THEN 'moved'
        WHEN i.image_id IS NOT NULL AND (
            i.file_size IS DISTINCT FROM l.known_size
            OR i.mtime_ns IS DISTINCT FROM l.known_mtime_ns
            OR i.sha256 IS DISTINCT FROM l.known_sha256
            OR i.status IS DISTINCT FROM l.known_status) THEN 'moved'
        WHEN l.state = 'gone' THEN 'missing'
        WHEN p.kind = 'touch' THEN 'touch'
        WHEN l.known_image_id IS NULL THEN 'add'
        ELSE 'update'
    END AS action
FROM merge_list AS l
LEFT JOIN merge_parts AS p ON p.path = l.path
LEFT JOIN images AS i ON i.path = l.path;
