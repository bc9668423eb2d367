-- One rater's task labels in force. $1: rater.
SELECT image_id, rater, usable_label, quality_label, gado_label
FROM rater_labels WHERE rater = $1
