-- Header facts of one image, for the detail pane.
SELECT image_id, path, coalesce(subject, ''), coalesce(session, ''), coalesce(suffix, ''),
       status, error, warnings, dim_x, dim_y, dim_z, voxel_x, voxel_y, voxel_z,
       datatype, orientation, manufacturer, field_strength, series_description
FROM images
WHERE image_id = ?;
