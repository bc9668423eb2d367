-- Labelled target images that two runs' splits place differently (another set of
-- train, validation and test, or in one split only). $1, $2: split ids.
SELECT count(*)
FROM (
    SELECT image_id, "set" FROM splits
    WHERE split_id = $1 AND domain = 'target' AND "set" <> 'unlabelled'
) a
FULL OUTER JOIN (
    SELECT image_id, "set" FROM splits
    WHERE split_id = $2 AND domain = 'target' AND "set" <> 'unlabelled'
) b USING (image_id)
WHERE a."set" IS DISTINCT FROM b."set"
