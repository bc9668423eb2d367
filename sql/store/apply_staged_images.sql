-- Applies the image rows of one staged import batch (one row per path), inside the
-- batch's transaction. Existing rows are updated in place, so image_id and first_seen
-- stay and ratings keep pointing at them; new paths get fresh image_ids.

UPDATE images SET
    root = s.root, rel_path = s.rel_path,
    status = s.status, error = s.error, warnings = s.warnings,
    subject = s.subject, session = s.session, acq = s.acq,
    rec = s.rec, run = s.run, suffix = s.suffix,
    bids_datatype = s.bids_datatype, other_entities = s.other_entities,
    file_size = s.file_size, mtime_ns = s.mtime_ns, sha256 = s.sha256,
    nifti_version = s.nifti_version, dim_x = s.dim_x, dim_y = s.dim_y,
    dim_z = s.dim_z, n_volumes = s.n_volumes, voxel_x = s.voxel_x,
    voxel_y = s.voxel_y, voxel_z = s.voxel_z, datatype = s.datatype,
    scl_slope = s.scl_slope, scl_inter = s.scl_inter,
    qform_code = s.qform_code, sform_code = s.sform_code,
    affine_source = s.affine_source, orientation = s.orientation,
    affine = s.affine, intent_code = s.intent_code,
    description = s.description,
    intensity_min = s.intensity_min, intensity_max = s.intensity_max,
    intensity_mean = s.intensity_mean, intensity_std = s.intensity_std,
    intensity_p01 = s.intensity_p01, intensity_p50 = s.intensity_p50,
    intensity_p99 = s.intensity_p99, zero_fraction = s.zero_fraction,
    nonfinite_voxels = s.nonfinite_voxels,
    manufacturer = s.manufacturer, scanner_model = s.scanner_model,
    field_strength = s.field_strength, acquisition_type = s.acquisition_type,
    series_description = s.series_description, protocol_name = s.protocol_name,
    institution = s.institution, station = s.station, sidecar = s.sidecar,
    updated_at = now()
FROM stage_images AS s
WHERE images.path = s.path;

INSERT INTO images (
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
)
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
FROM stage_images AS s
WHERE NOT EXISTS (SELECT 1 FROM images AS i WHERE i.path = s.path);

-- Each upserted image gets exactly the previews of its batch row: none for a file that
-- stopped being readable, so no stale slice survives.
DELETE FROM previews
WHERE image_id IN (
    SELECT i.image_id FROM images AS i JOIN stage_images AS s ON i.path = s.path
);

INSERT INTO previews (image_id, plane, width, height, png)
SELECT i.image_id, p.plane, p.width, p.height, p.png
FROM stage_previews AS p
JOIN images AS i ON i.path = p.path;
