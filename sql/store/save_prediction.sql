-- One prediction of a run, replacing any earlier one of the same run and image.
-- Probabilities travel as JSON text and become a DOUBLE[].
INSERT OR REPLACE INTO predictions
    (run_id, image_id, task, label, probabilities, error, domain_target, reason)
VALUES (?, ?, ?, ?, CAST(? AS DOUBLE[]), ?, ?, ?)
