-- Stages the files a sharded import merge writes, from its parts ({columns}: the
-- staging table's columns, taken from it, so the part and the store agree by name).
INSERT INTO stage_images
SELECT {columns}
FROM merge_parts AS p JOIN merge_plan AS m ON m.path = p.path
WHERE m.action IN ('add', 'update');

INSERT INTO stage_previews
SELECT path, slice.plane, slice.width, slice.height, slice.png
FROM (
    SELECT p.path, unnest(p.previews) AS slice
    FROM merge_parts AS p JOIN merge_plan AS m ON m.path = p.path
    WHERE m.action IN ('add', 'update')
);

INSERT INTO stage_touches
SELECT p.touch_image_id, p.mtime_ns
FROM merge_parts AS p JOIN merge_plan AS m ON m.path = p.path
WHERE m.action = 'touch';
