-- Connection-local staging tables for one import batch: the Appender fills them, and
-- apply_staged_images.sql, apply_staged_iqms.sql and apply_staged_touches.sql move them
-- into images, previews and iqms with set-based statements.
-- They take their column types from images and previews, so they follow the schema.
CREATE TEMP TABLE IF NOT EXISTS stage_images AS
SELECT
    path, root, rel_path, status, error, warnings,
    subject, session, acq, rec, run, suffix, bids_datatype, other_entities,
    file_size, mtime_ns, sha256,
    nifti_version, dim_x, dim_y, dim_z, n_volumes, voxel_x, voxel_y, voxel_z,
    datatype, scl_slope, scl_inter, qform_code, sform_code, affine_source,
    orientation, affine, intent_code, description,
    intensity_min, intensity_max, intensity_mean, intensity_std,
    intensity_p01, intensity_p50, intensity_p99, zero_fraction, nonfinite_voxels,
    manufacturer, scanner_model, field_strength, acquisition_type,
    series_description, protocol_name, institution, station, sidecar
FROM images
LIMIT 0;

-- Previews are keyed by path: a new image has no image_id until it is inserted.
CREATE TEMP TABLE IF NOT EXISTS stage_previews AS
SELECT ''::VARCHAR AS path, plane, width, height, png
FROM previews
LIMIT 0;

-- Same content under a new modification time.
CREATE TEMP TABLE IF NOT EXISTS stage_touches AS
SELECT image_id, mtime_ns
FROM images
LIMIT 0;

-- Quality metrics, keyed by path as previews are; the columns after it in iqms' order
-- (upsert_iqm.sql's), without the id and the time the apply step gives them.
CREATE TEMP TABLE IF NOT EXISTS stage_iqms AS
SELECT ''::VARCHAR AS path, * EXCLUDE (image_id, computed_at)
FROM iqms
LIMIT 0;
