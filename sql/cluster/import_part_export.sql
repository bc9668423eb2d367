-- One import shard's part, from the worker's private store: a row per file it was
-- dealt. `upsert` rows carry the image row (the staging columns, {columns}), its
-- preview slices and its quality metrics; `touch` rows a new modification time of
-- unchanged content (`touch_image_id` names the image in the store the list was made
-- from); `unchanged` rows nothing. COPY takes no parameters: {columns} and the quoted
-- {path} are filled in.
COPY (
    SELECT 'upsert' AS kind, {columns},
        (SELECT list({'plane': p.plane, 'width': p.width, 'height': p.height, 'png': p.png}
                     ORDER BY p.plane)
         FROM previews AS p WHERE p.image_id = i.image_id) AS previews,
        (SELECT q FROM iqms AS q WHERE q.image_id = i.image_id) AS iqm
    FROM images AS i
    UNION ALL BY NAME
    SELECT 'touch' AS kind, path, mtime_ns, touch_image_id FROM part_touches
    UNION ALL BY NAME
    SELECT 'unchanged' AS kind, path FROM part_unchanged
    ORDER BY path
) TO {path} (FORMAT parquet, USE_TMP_FILE false)
