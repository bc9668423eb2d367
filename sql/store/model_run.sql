-- The run row that an exported model's predictions are stored under: created, or made
-- `running` again with the model's card when the same model predicts again.
-- $1 run id, $2 task, $3 method, $4 preset, $5 card (JSON), $6 git commit,
-- $7 label snapshot, $8 weights path.
INSERT INTO runs (run_id, kind, task, method, preset, status, config, git_commit,
                  label_snapshot, weights_path)
VALUES ($1, 'infer', $2, $3, $4, 'running', $5, $6, $7, $8)
ON CONFLICT (run_id) DO UPDATE SET
    task = excluded.task, method = excluded.method, preset = excluded.preset,
    status = 'running', config = excluded.config, git_commit = excluded.git_commit,
    label_snapshot = excluded.label_snapshot, weights_path = excluded.weights_path,
    metrics = NULL, error = NULL, started_at = now(), finished_at = NULL
