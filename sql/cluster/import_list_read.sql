-- An import work list written by import_list_create.sql, in walk order.
SELECT position, path, state, size_bytes, known_image_id, known_size, known_mtime_ns,
       known_sha256, known_status, root, iqm, plan_hash, shards, store
FROM read_parquet(?)
ORDER BY position
