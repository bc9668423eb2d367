-- Images per sequence (BIDS suffix) and import status, for the dashboard.
SELECT coalesce(suffix, '(none)') AS sequence,
       count(*) FILTER (WHERE status = 'ok') AS ok,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'missing') AS missing
FROM images
GROUP BY ALL
ORDER BY sequence;
