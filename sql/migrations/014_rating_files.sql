-- The rating files whose ratings were saved: the source their ratings name
-- ('import:<sha256>'), and the file's absolute path (`file_name`). The same file
-- imported again after an edit (a spreadsheet that grows each week) saves only its
-- rows that changed since the latest save from that file: saving them all again
-- overruled corrections and undos made in between.
CREATE TABLE rating_files (
    source      VARCHAR NOT NULL,
    file_name   VARCHAR NOT NULL,
    imported_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
