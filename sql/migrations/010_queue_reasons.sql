-- Why each image was queued. On the queue: the strategy that filled it and the run whose
-- predictions ranked it (with the triage band for `--strategy triage`); on each item:
-- the reason (`uncertain`, `random`, `triage`; NULL for every-image queues and for
-- queues made before this migration), its score (entropy of the predicted probabilities
-- in bits for `uncertain`, the predicted probability of the task's last class for
-- `triage`) and the distance from the labelled target domain where one was measured.
ALTER TABLE queues ADD COLUMN strategy VARCHAR;
ALTER TABLE queues ADD COLUMN run_id VARCHAR;
ALTER TABLE queues ADD COLUMN triage_rate DOUBLE;
ALTER TABLE queues ADD COLUMN accept_below DOUBLE;
ALTER TABLE queues ADD COLUMN reject_from DOUBLE;
ALTER TABLE queue_items ADD COLUMN reason VARCHAR;
ALTER TABLE queue_items ADD COLUMN score DOUBLE;
ALTER TABLE queue_items ADD COLUMN domain_distance DOUBLE;
