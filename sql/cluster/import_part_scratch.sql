-- The worker's own tables beside its private store's images: what has no image row.
CREATE TEMP TABLE part_touches (path VARCHAR, touch_image_id BIGINT, mtime_ns BIGINT);
CREATE TEMP TABLE part_unchanged (path VARCHAR);
