-- The kind and configuration (for a run of an exported model: its card as JSON) of a
-- run. $1: run id.
SELECT kind, config FROM runs WHERE run_id = $1
