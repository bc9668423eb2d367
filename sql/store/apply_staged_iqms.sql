-- The staged quality metrics of a batch, under the ids its staged rows now have. The
-- images the batch rewrote lost their old metrics first (delete_staged_iqms.sql); a path
-- written twice in the batch was staged once, with its last write.
INSERT OR REPLACE INTO iqms BY NAME
SELECT i.image_id, current_timestamp AS computed_at, s.* EXCLUDE (path)
FROM temp.stage_iqms s
JOIN images i ON i.path = s.path;
