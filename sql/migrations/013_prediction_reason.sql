-- Why a prediction's label was given without the network: an image that does not
-- register to the model's template (a flagged fit, or no head found) is stored by a
-- usability model as a reject, all its probability there, with the registration's
-- message here. NULL for every label the network gave, and for predictions made before
-- this migration.
ALTER TABLE predictions ADD COLUMN reason VARCHAR;
