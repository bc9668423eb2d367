-- Every run a report can name: training runs, and any run id with predictions.
SELECT run_id FROM runs WHERE kind = 'train'
UNION SELECT DISTINCT run_id FROM predictions
ORDER BY run_id
