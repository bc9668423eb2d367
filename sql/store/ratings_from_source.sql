-- What a rating file already saved, so that importing it again saves only what is new:
-- its ratings per source (the file, or the file and a line: 'import:<sha256>:<line>'),
-- rater and image, and the first save.
SELECT source, rater, image_id, count(*) AS n,
       strftime(min(saved_at), '%Y-%m-%d %H:%M:%S') AS first_saved
FROM ratings
WHERE source = ? OR starts_with(source, ? || ':')
GROUP BY source, rater, image_id
