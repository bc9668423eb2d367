-- After the staged rows are applied: the parts' quality metrics under the store's image
-- ids, and the files gone since the list was frozen marked missing.
INSERT OR REPLACE INTO iqms BY NAME
SELECT i.image_id AS image_id, q.* EXCLUDE (image_id, part_path)
FROM (
    SELECT p.path AS part_path, unnest(p.iqm)
    FROM merge_parts AS p
    WHERE p.iqm IS NOT NULL
) AS q
JOIN stage_images AS s ON s.path = q.part_path
JOIN images AS i ON i.path = q.part_path;

UPDATE images SET status = 'missing', updated_at = current_timestamp
FROM merge_plan AS m
WHERE images.path = m.path AND m.action = 'missing';
