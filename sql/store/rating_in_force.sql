-- The image of a save when it is still the rater's rating in force for its image (an
-- undo withdraws only that: a save overruled since, by a later save or an import of
-- the rater's file, is not withdrawn in its place).
SELECT image_id
FROM ratings_latest
WHERE rater = ? AND rating_id = ?;
