-- Readable images per scanner (manufacturer, model, field strength) and sequence,
-- from the JSON sidecars; '(unknown)' where a sidecar does not say.
-- Usage: cdwqc sql -f sql/queries/images_per_scanner.sql
SELECT coalesce(manufacturer, '(unknown)') AS manufacturer,
       coalesce(scanner_model, '(unknown)') AS model,
       field_strength,
       coalesce(suffix, '(none)') AS sequence,
       count(*) AS images
FROM images
WHERE status = 'ok'
GROUP BY ALL
ORDER BY images DESC, manufacturer, model, sequence;
