-- The raters whose ratings in force cover images of a split (the consensus a model was
-- trained on). $1: split id.
SELECT DISTINCT l.rater
FROM ratings_latest l
WHERE l.image_id IN (SELECT image_id FROM splits WHERE split_id = $1 AND label IS NOT NULL)
ORDER BY l.rater
