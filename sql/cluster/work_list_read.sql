-- A work list written by work_list_create.sql, in plan order.
SELECT position, image_id, path, sha256, label, size_bytes, run_id, plan_hash, shards, plan, store, deal_unit,
       file_size, mtime_ns
FROM read_parquet(?)
ORDER BY position
