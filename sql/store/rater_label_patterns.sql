-- The labels in force for the agreement report, one row per image instead of one per
-- rating: each rater's three task labels are packed into 6 bits (usable + 3 * quality
-- + 12 * gado, where 0 is "no label" and 1.. the categories in their declared order:
-- usable, reject; good, medium, bad; no_gado, gado) and ten raters into one BIGINT,
-- rater r at bits 6 * (r % 10) of the row of block r // 10.
-- kind 0 rows name the raters (slot = rater index), kind 1 rows
-- the scanners (slot = scanner index, view image_scanners), kind 2 rows carry the
-- labels of one image and block of raters (slot = block) with the image's scanner
-- index (NULL when unknown), in image_id order.
-- Scanners are looked up once per image, after the ratings are grouped.
-- $1: BIDS suffix to keep, or NULL for every image.
-- The rating in force per image and rater is the live rating (not an undo, not undone)
-- with the largest rating_id, as in the views ratings_latest and rater_labels (migrations
-- 002 and 005), whose labels this repeats: found by max(rating_id) and a semi-join, not
-- by the view's row_number() over every column of ratings.
WITH in_force AS MATERIALIZED (
    SELECT max(rating_id) AS rating_id
    FROM ratings
    WHERE undoes IS NULL
      AND rating_id NOT IN (SELECT undoes FROM ratings WHERE undoes IS NOT NULL)
      AND image_id IN (SELECT image_id FROM images WHERE $1::VARCHAR IS NULL OR suffix = $1)
    GROUP BY image_id, rater
),
labels AS MATERIALIZED (
    SELECT image_id, rater,
           CASE WHEN usable THEN 1 ELSE 2 END
         + 3 * CASE WHEN NOT usable THEN 0
                    WHEN quality IS NOT NULL
                        THEN CASE quality WHEN 'good' THEN 1 WHEN 'medium' THEN 2 WHEN 'bad' THEN 3 ELSE 0 END
                    WHEN greatest(motion, contrast, noise) = 0 THEN 1
                    WHEN greatest(motion, contrast, noise) = 1 THEN 2
                    ELSE 3 END
         + 12 * CASE WHEN NOT usable OR gado IS NULL THEN 0 WHEN gado THEN 2 ELSE 1 END AS code
    FROM ratings
    WHERE rating_id IN (SELECT rating_id FROM in_force)
      AND usable IS NOT NULL
),
raters AS MATERIALIZED (
    SELECT rater, row_number() OVER (ORDER BY rater) - 1 AS r
    FROM (SELECT DISTINCT rater FROM labels)
),
packed AS MATERIALIZED (
    SELECT image_id, r // 10 AS block, bit_or(code::BIGINT << (6 * (r % 10))) AS codes
    FROM labels
    JOIN raters USING (rater)
    GROUP BY ALL
),
image_scanner AS MATERIALIZED (
    SELECT image_id, scanner
    FROM image_scanners
    WHERE image_id IN (SELECT image_id FROM packed)
),
scanners AS MATERIALIZED (
    SELECT scanner, row_number() OVER (ORDER BY scanner) - 1 AS s
    FROM (SELECT DISTINCT scanner FROM image_scanner WHERE scanner IS NOT NULL)
)
SELECT 0 AS kind, NULL::BIGINT AS image_id, r AS slot, rater AS name,
       NULL::BIGINT AS scanner, NULL::BIGINT AS codes
FROM raters
UNION ALL
SELECT 1, NULL, s, scanner, NULL, NULL
FROM scanners
UNION ALL
SELECT 2, p.image_id, p.block, NULL, sc.s, p.codes
FROM packed p
LEFT JOIN image_scanner USING (image_id)
LEFT JOIN scanners sc USING (scanner)
ORDER BY kind, image_id, slot
