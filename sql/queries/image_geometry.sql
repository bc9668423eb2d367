-- Acquisition geometry of readable images: matrix, voxel size, orientation, and a
-- flag for thick-slice (likely 2D) acquisitions, whose largest voxel side is over 3 mm.
-- Usage: cdwqc sql -f sql/queries/image_geometry.sql
SELECT rel_path, suffix, dim_x, dim_y, dim_z, n_volumes,
       round(voxel_x, 2) AS voxel_x, round(voxel_y, 2) AS voxel_y, round(voxel_z, 2) AS voxel_z,
       orientation, datatype,
       greatest(voxel_x, voxel_y, voxel_z) > 3 AS thick_slices
FROM images
WHERE status = 'ok'
ORDER BY thick_slices DESC, rel_path;
