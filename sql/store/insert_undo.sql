-- An undo: a row that withdraws one save (`undoes`), appended like any save.
INSERT INTO ratings (image_id, rater, undoes, protocol_version, source)
VALUES (?, ?, ?, ?, ?);
