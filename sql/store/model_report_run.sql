-- What a model report says about its run. $1: run id.
SELECT run_id, kind, task, method, preset, status, split_id, config, git_commit,
       label_snapshot, CAST(started_at AS VARCHAR), CAST(finished_at AS VARCHAR), metrics
FROM runs WHERE run_id = $1
