-- One run's epochs in order, for the dashboard's training curves.
SELECT epoch, train_loss, source_loss, target_loss, domain_loss, val_loss,
       val_balanced_accuracy, alpha, seconds
FROM epochs
WHERE run_id = ?
ORDER BY epoch;
