-- Empties the staging tables once their batch is applied, inside its transaction.
DELETE FROM stage_images;
DELETE FROM stage_previews;
DELETE FROM stage_touches;
DELETE FROM stage_iqms;
