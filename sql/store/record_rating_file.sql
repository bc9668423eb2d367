-- A rating file whose ratings this import saves: their source and the file's path.
INSERT INTO rating_files (source, file_name) VALUES (?, ?);
