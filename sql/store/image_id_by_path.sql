SELECT image_id FROM images WHERE path = ?;
