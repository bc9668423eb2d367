//! One file in, one `images` row (and its previews) out: identity, BIDS entities,
//! header facts, intensity summary, sidecar, previews, or a one-line failure reason.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::imaging::{self, ImagingError, bids, nifti, orientation, preview, sidecar, stats};
use crate::store::images::{HeaderFacts, ImageRow, ImageStatus, ImageWrite, KnownFile, PreviewRow};

/// Size and modification time of a file as seen by the walker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: i64,
    pub mtime_ns: i64,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        Self {
            size: meta.len() as i64,
            mtime_ns,
        }
    }
}

/// What importing one file amounts to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A new or changed file, readable.
    Imported {
        write: ImageWrite,
        new: bool,
        warnings: Vec<String>,
    },
    /// A new or changed file that cannot be indexed.
    Failed { write: ImageWrite, reason: String },
    /// Content unchanged (same hash); possibly a new modification time to remember.
    Unchanged { write: Option<ImageWrite> },
}

/// Base row: identity and entities, no facts yet.
fn base_row(path: &Path, root: &Path, stamp: Option<FileStamp>) -> ImageRow {
    let entities = bids::parse(path);
    let rel_path = path
        .strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    let stamp = stamp.unwrap_or(FileStamp {
        size: 0,
        mtime_ns: 0,
    });
    ImageRow {
        path: path.to_string_lossy().into_owned(),
        root: root.to_string_lossy().into_owned(),
        rel_path,
        subject: entities.subject,
        session: entities.session,
        acq: entities.acq,
        rec: entities.rec,
        run: entities.run,
        suffix: entities.suffix,
        bids_datatype: entities.datatype,
        other_entities: entities.other,
        file_size: stamp.size,
        mtime_ns: stamp.mtime_ns,
        ..ImageRow::default()
    }
}

fn failed(mut row: ImageRow, reason: String) -> Outcome {
    row.status = ImageStatus::Failed;
    row.error = Some(reason.clone());
    Outcome::Failed {
        write: ImageWrite::Upsert {
            row: Box::new(row),
            previews: Vec::new(),
        },
        reason,
    }
}

/// Analyses one candidate file. `known` is the store's row for the same path, if any.
/// Never fails: every problem becomes a `Failed` outcome with a one-line reason.
pub fn analyse(path: &Path, root: &Path, known: Option<&KnownFile>) -> Outcome {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let reason = match std::fs::symlink_metadata(path) {
                Ok(l) if l.file_type().is_symlink() => {
                    let target = std::fs::read_link(path)
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| "?".into());
                    format!("broken symbolic link to {target}")
                }
                _ => format!("cannot read file: {e}"),
            };
            return failed(base_row(path, root, None), reason);
        }
    };
    let stamp = FileStamp::of(&meta);
    let row = base_row(path, root, Some(stamp));
    if !meta.is_file() {
        return failed(row, "not a regular file".into());
    }
    let raw = match nifti::read_file(path) {
        Ok(b) => b,
        Err(e) => return failed(row, e.reason()),
    };
    let sha = hex_sha256(&raw);
    if let Some(k) = known
        && k.status != "missing"
        && k.sha256.as_deref() == Some(sha.as_str())
    {
        let write = (k.mtime_ns != stamp.mtime_ns || k.file_size != stamp.size).then_some(
            ImageWrite::Touch {
                image_id: k.image_id,
                mtime_ns: stamp.mtime_ns,
            },
        );
        return Outcome::Unchanged { write };
    }
    let mut row = row;
    row.sha256 = Some(sha);
    match describe(path, raw, &mut row) {
        Ok((previews, warnings)) => {
            if !warnings.is_empty() {
                row.warnings = Some(warnings.join("; "));
            }
            Outcome::Imported {
                write: ImageWrite::Upsert {
                    row: Box::new(row),
                    previews,
                },
                new: known.is_none(),
                warnings,
            }
        }
        Err(e) => failed(row, e.reason()),
    }
}

/// Fills header facts, intensities and sidecar fields; returns previews and warnings.
fn describe(
    path: &Path,
    raw: Vec<u8>,
    row: &mut ImageRow,
) -> Result<(Vec<PreviewRow>, Vec<String>), ImagingError> {
    let bytes = nifti::decompress(path, raw)?;
    let decoded = nifti::decode(path, &bytes)?;
    drop(bytes);
    let mut warnings = Vec::new();
    let h = &decoded.header;
    let (affine, source) = orientation::best_affine(h);
    if source == imaging::AffineSource::Pixdim {
        warnings.push("no sform or qform: orientation assumed from voxel order".to_string());
    }
    row.header = Some(HeaderFacts {
        nifti_version: h.version,
        dims: [h.dim[1], h.dim[2], h.dim[3]],
        n_volumes: h.n_volumes() as i64,
        voxel_size: h.voxel_size_mm(),
        datatype: h.datatype.name().to_string(),
        scl_slope: h.scl_slope,
        scl_inter: h.scl_inter,
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        affine_source: source.name().to_string(),
        orientation: orientation::axis_codes(&affine),
        affine,
        intent_code: h.intent_code,
        description: h.descrip.clone(),
    });
    let summary = stats::summarise(&decoded.data);
    match &summary {
        Some(s) if s.nonfinite > 0 => warnings.push(format!(
            "{} voxels are NaN or infinite (left out of statistics and previews)",
            s.nonfinite
        )),
        None => warnings.push("no finite voxel values".to_string()),
        _ => {}
    }
    row.intensity = summary;
    match sidecar::read(path) {
        Ok(s) => row.sidecar = s,
        Err(w) => warnings.push(w),
    }
    let volume = imaging::Volume::from_decoded(decoded);
    let mut previews = Vec::with_capacity(3);
    for (plane, picture) in
        preview::previews(volume.dims, &volume.data, &volume.affine, volume.voxel_size)
    {
        previews.push(PreviewRow {
            plane: plane.name(),
            width: picture.width as u32,
            height: picture.height as u32,
            png: picture.to_png()?,
        });
    }
    Ok((previews, warnings))
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}
