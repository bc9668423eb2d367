-- The start of a run: status running until it ends.
INSERT INTO runs (run_id, kind, task, method, preset, status, config, git_commit,
                  split_id, label_snapshot, weights_path, source_sequence, target_sequence)
VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?);
