INSERT OR REPLACE INTO previews (image_id, plane, width, height, png) VALUES (?, ?, ?, ?, ?);
