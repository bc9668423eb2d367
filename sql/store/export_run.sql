-- What exporting a training run as a model reads of it. $1: run id.
SELECT kind, task, method, preset, status, config, git_commit, label_snapshot, metrics,
       split_id
FROM runs WHERE run_id = $1
