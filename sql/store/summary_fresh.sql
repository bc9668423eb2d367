-- Whether the per-image summaries (migration 011) can be trusted: one state row, not
-- marked stale, and the row counts the store layer advanced with its writes equal to
-- the tables' (a missing row, or rows written by another tool, read as not fresh).
SELECT count(*) = 1
       AND coalesce(bool_and(NOT s.stale AND s.ratings = r.n AND s.predictions = p.n), false)
FROM image_summary_state s,
     (SELECT count(*) AS n FROM ratings) r,
     (SELECT count(*) AS n FROM predictions) p;
