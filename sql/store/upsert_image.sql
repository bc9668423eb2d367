-- Insert or refresh one image row, keyed by its absolute path. first_seen and the
-- image_id of an existing row are kept, so ratings keep pointing at it.
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
) VALUES (
    ?, ?, ?, ?, ?, ?,
    ?, ?, ?, ?, ?, ?, ?, ?,
    ?, ?, ?,
    ?, ?, ?, ?, ?, ?, ?, ?,
    ?, ?, ?, ?, ?, ?,
    ?, ?, ?, ?,
    ?, ?, ?, ?,
    ?, ?, ?, ?, ?,
    ?, ?, ?, ?,
    ?, ?, ?, ?, ?
)
ON CONFLICT (path) DO UPDATE SET
    root = excluded.root, rel_path = excluded.rel_path,
    status = excluded.status, error = excluded.error, warnings = excluded.warnings,
    subject = excluded.subject, session = excluded.session, acq = excluded.acq,
    rec = excluded.rec, run = excluded.run, suffix = excluded.suffix,
    bids_datatype = excluded.bids_datatype, other_entities = excluded.other_entities,
    file_size = excluded.file_size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,
    nifti_version = excluded.nifti_version, dim_x = excluded.dim_x, dim_y = excluded.dim_y,
    dim_z = excluded.dim_z, n_volumes = excluded.n_volumes, voxel_x = excluded.voxel_x,
    voxel_y = excluded.voxel_y, voxel_z = excluded.voxel_z, datatype = excluded.datatype,
    scl_slope = excluded.scl_slope, scl_inter = excluded.scl_inter,
    qform_code = excluded.qform_code, sform_code = excluded.sform_code,
    affine_source = excluded.affine_source, orientation = excluded.orientation,
    affine = excluded.affine, intent_code = excluded.intent_code,
    description = excluded.description,
    intensity_min = excluded.intensity_min, intensity_max = excluded.intensity_max,
    intensity_mean = excluded.intensity_mean, intensity_std = excluded.intensity_std,
    intensity_p01 = excluded.intensity_p01, intensity_p50 = excluded.intensity_p50,
    intensity_p99 = excluded.intensity_p99, zero_fraction = excluded.zero_fraction,
    nonfinite_voxels = excluded.nonfinite_voxels,
    manufacturer = excluded.manufacturer, scanner_model = excluded.scanner_model,
    field_strength = excluded.field_strength, acquisition_type = excluded.acquisition_type,
    series_description = excluded.series_description, protocol_name = excluded.protocol_name,
    institution = excluded.institution, station = excluded.station, sidecar = excluded.sidecar,
    updated_at = now()
RETURNING image_id;
