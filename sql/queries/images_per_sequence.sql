-- How many images of each sequence (BIDS suffix) and status the store holds.
-- Usage: cdwqc sql -f sql/queries/images_per_sequence.sql
SELECT coalesce(suffix, '(none)') AS sequence,
       count(*) FILTER (WHERE status = 'ok') AS ok,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'missing') AS missing,
       count(*) AS total
FROM images
GROUP BY ALL
ORDER BY total DESC, sequence;
