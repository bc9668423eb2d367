-- The preview slices of one image.
SELECT plane, png FROM previews WHERE image_id = ? ORDER BY plane;
