-- The tasks a run has predictions for (a TorchScript run has no run row). $1: run id.
SELECT DISTINCT task FROM predictions WHERE run_id = $1 ORDER BY task
