-- The domain head's output beside each prediction: the probability that the image
-- comes from the target domain, for networks trained with their domain head (SSDA);
-- NULL for every other prediction and for predictions made before this migration.
-- `-log2` of it is the image's distance from the target domain in bits, which the
-- uncertainty queue adds to the entropy of its prediction.
ALTER TABLE predictions ADD COLUMN domain_target DOUBLE;
