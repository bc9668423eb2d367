-- What training and inference read back of one run.
SELECT kind, task, method, preset, status, weights_path, config, split_id, label_snapshot,
       source_sequence, target_sequence
FROM runs
WHERE run_id = ?;
