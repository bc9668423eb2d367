-- The labels in force for the agreement report, one row per image (and block of ten
-- raters) instead of one per rating: each rater's three task labels are packed into 6
-- bits (usable + 3 * quality + 12 * gado, where 0 is "no label" and 1.. the categories
-- in their declared order: usable, reject; good, medium, bad; no_gado, gado) and ten
-- raters into one BIGINT, rater r at bits 6 * (r % 10) of the row of block r // 10.
-- kind 0 rows name the raters (slot = rater index; every rater with a saved rating, by
-- name, so some may have no label in force), kind 1 rows the scanners (slot = scanner
-- index), kind 2 rows carry the labels of one image and block of raters (slot = block)
-- with the image's scanner index (NULL when unknown), in no particular order.
-- $1: BIDS suffix to keep, or NULL for every image.
--
-- The rating in force per image and rater is the live rating (not an undo, not undone)
-- with the largest rating_id, as in the views ratings_latest and rater_labels (migrations
-- 002 and 005), whose labels this repeats (code 0 where the rating in force has no
-- usable answer, which rater_labels leaves out). Ratings are grouped per image and
-- block, not per image and rater (four times fewer groups): where each rater saved once,
-- the block's codes are the bitwise or of its ratings' codes; the few images where a
-- rater saved several times are grouped again, keeping each rater's largest rating_id.
-- Scanner names follow the view image_scanners (migration 004), whose rule this repeats
-- once per distinct manufacturer and field strength rather than once per image.
WITH raters AS MATERIALIZED (
    SELECT rater, row_number() OVER (ORDER BY rater) - 1 AS r
    FROM (SELECT DISTINCT rater FROM ratings)
),
rater_list AS MATERIALIZED (
    SELECT list(rater ORDER BY r) AS names FROM raters
),
live AS (
    SELECT image_id, rating_id,
           list_position((SELECT names FROM rater_list), rater) - 1 AS r,
           CASE WHEN usable IS NULL THEN 0
                ELSE CASE WHEN usable THEN 1 ELSE 2 END
                   + 3 * CASE WHEN NOT usable THEN 0
                              WHEN quality IS NOT NULL
                                  THEN CASE quality WHEN 'good' THEN 1 WHEN 'medium' THEN 2
                                                    WHEN 'bad' THEN 3 ELSE 0 END
                              WHEN greatest(motion, contrast, noise) = 0 THEN 1
                              WHEN greatest(motion, contrast, noise) = 1 THEN 2
                              ELSE 3 END
                   + 12 * CASE WHEN NOT usable OR gado IS NULL THEN 0 WHEN gado THEN 2 ELSE 1 END
           END AS code
    FROM ratings
    WHERE undoes IS NULL
      AND rating_id NOT IN (SELECT undoes FROM ratings WHERE undoes IS NOT NULL)
),
grouped AS MATERIALIZED (
    SELECT image_id, r // 10 AS block, count(*) AS saves,
           bit_or(1::BIGINT << (r % 10)) AS seen,
           bit_or(code::BIGINT << (6 * (r % 10))) AS codes
    FROM live
    GROUP BY ALL
),
resaved_images AS MATERIALIZED (
    SELECT DISTINCT image_id FROM grouped WHERE saves <> bit_count(seen)
),
resaved AS (
    SELECT image_id, r // 10 AS block, bit_or(code::BIGINT << (6 * (r % 10))) AS codes
    FROM (
        SELECT image_id, r, arg_max(code, rating_id) AS code
        FROM live
        WHERE image_id IN (SELECT image_id FROM resaved_images)
        GROUP BY ALL
    )
    GROUP BY ALL
),
packed AS (
    SELECT image_id, block, codes
    FROM grouped
    WHERE image_id NOT IN (SELECT image_id FROM resaved_images)
    UNION ALL
    SELECT image_id, block, codes
    FROM resaved
),
labelled AS MATERIALIZED (
    SELECT p.image_id, p.block, p.codes, i.manufacturer, i.field_strength
    FROM packed p
    JOIN images i USING (image_id)
    WHERE p.codes <> 0 AND ($1::VARCHAR IS NULL OR i.suffix = $1)
),
scanner_facts AS MATERIALIZED (
    SELECT DISTINCT manufacturer, field_strength FROM labelled
),
named AS MATERIALIZED (
    SELECT manufacturer, field_strength,
           CASE WHEN manufacturer IS NULL OR trim(manufacturer) = '' THEN NULL
                ELSE concat_ws(' ', upper(split_part(trim(manufacturer), ' ', 1)),
                               CASE WHEN field_strength IS NULL THEN NULL
                                    WHEN field_strength > 100 THEN printf('%.1fT', field_strength / 10000)
                                    ELSE printf('%.1fT', field_strength) END)
           END AS scanner
    FROM scanner_facts
),
scanners AS MATERIALIZED (
    SELECT scanner, row_number() OVER (ORDER BY scanner) - 1 AS s
    FROM (SELECT DISTINCT scanner FROM named WHERE scanner IS NOT NULL)
),
fact_index AS MATERIALIZED (
    SELECT manufacturer, field_strength, s FROM named JOIN scanners USING (scanner)
)
SELECT 0::BIGINT AS kind, NULL::BIGINT AS image_id, r::BIGINT AS slot, rater AS name,
       NULL::BIGINT AS scanner, NULL::BIGINT AS codes
FROM raters
UNION ALL
SELECT 1, NULL, s, scanner, NULL, NULL
FROM scanners
UNION ALL
SELECT 2, l.image_id, l.block, NULL, f.s, l.codes
FROM labelled l
LEFT JOIN fact_index f
       ON f.manufacturer IS NOT DISTINCT FROM l.manufacturer
      AND f.field_strength IS NOT DISTINCT FROM l.field_strength
