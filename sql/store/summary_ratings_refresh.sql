-- Recomputes the rating summaries (migration 011) of the images $1 (a BIGINT[] written
-- as text, '[3, 17]') from their ratings, inside the transaction that wrote them: the
-- raters with a rating in force (the live rating, neither undoing nor undone, with the
-- largest rating_id per rater, as `ratings_latest`) and how many of those rate the
-- image usable and how many reject it (as `rater_labels`).
UPDATE images SET raters_in_force = f.raters, raters_usable = f.usable,
                  raters_reject = f.reject
FROM (
    WITH ids AS (SELECT DISTINCT unnest(CAST($1 AS BIGINT[])) AS image_id),
    in_force AS (
        SELECT image_id, rater, arg_max_null(usable, rating_id) AS usable
        FROM ratings
        WHERE image_id IN (SELECT image_id FROM ids)
          AND undoes IS NULL
          AND rating_id NOT IN (SELECT undoes FROM ratings WHERE undoes IS NOT NULL)
        GROUP BY image_id, rater
    )
    SELECT ids.image_id, count(l.rater)::INTEGER AS raters,
           count(l.rater) FILTER (WHERE l.usable)::INTEGER AS usable,
           count(l.rater) FILTER (WHERE NOT l.usable)::INTEGER AS reject
    FROM ids LEFT JOIN in_force l USING (image_id)
    GROUP BY ids.image_id
) AS f
WHERE images.image_id = f.image_id;
