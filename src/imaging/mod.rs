//! Reading brain images: NIfTI-1/2 headers and voxels, orientation, BIDS names,
//! sidecars, intensity summaries and preview slices.

pub mod antialias;
pub mod bias;
pub mod bids;
pub mod gunzip;
pub mod iqm;
pub mod native_noise;
pub mod nifti;
pub mod orientation;
pub mod preprocess;
pub mod preview;
pub mod registration;
pub mod sidecar;
pub mod simd;
pub mod stats;
pub(crate) mod trilinear;

use std::path::{Path, PathBuf};

pub use nifti::{Datatype, Header};
pub use orientation::{Affine, AffineSource};

/// Why an image could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("{path}: empty file")]
    Empty { path: PathBuf },
    #[error("{path}: corrupt gzip stream: {detail}")]
    Gzip { path: PathBuf, detail: String },
    #[error("{path}: gzip stream inflates past what its header describes: {detail}")]
    Inflation { path: PathBuf, detail: String },
    #[error("{path}: not a NIfTI file: {detail}")]
    NotNifti { path: PathBuf, detail: String },
    #[error("{path}: invalid NIfTI header: {detail}")]
    BadHeader { path: PathBuf, detail: String },
    #[error("{path}: truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path}: unsupported: {detail}")]
    Unsupported { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    NotVolume { path: PathBuf, detail: String },
    #[error("preview encoding: {0}")]
    Preview(String),
}

impl ImagingError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The message without the leading path, for tables that already show the path.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        match self {
            Self::Preview(_) => full,
            Self::Io { path, .. }
            | Self::NotRegularFile { path }
            | Self::Empty { path }
            | Self::Gzip { path, .. }
            | Self::Inflation { path, .. }
            | Self::NotNifti { path, .. }
            | Self::BadHeader { path, .. }
            | Self::Truncated { path, .. }
            | Self::Unsupported { path, .. }
            | Self::NotVolume { path, .. } => full
                .strip_prefix(&format!("{}: ", path.display()))
                .map(str::to_string)
                .unwrap_or(full),
        }
    }
}

/// One 3D volume in memory (the first volume of a 4D file).
#[derive(Debug, Clone)]
pub struct Volume {
    /// Voxel counts along i, j, k.
    pub dims: [usize; 3],
    /// Scaled intensities (scl_slope/scl_inter applied), i fastest:
    /// index = i + dims[0] * (j + dims[1] * k).
    pub data: Vec<f32>,
    /// Voxel (i, j, k, 1) -> world RAS+ millimetres: the sform when sform_code > 0,
    /// else the qform when qform_code > 0, else diag(pixdim).
    pub affine: Affine,
    /// Voxel sizes in mm (pixdim[1..=3]).
    pub voxel_size: [f64; 3],
}

impl Volume {
    /// Builds a volume from a decoded file.
    pub fn from_decoded(decoded: nifti::Decoded) -> Self {
        let (affine, _) = orientation::best_affine(&decoded.header);
        Self {
            dims: decoded.header.spatial_dims(),
            voxel_size: decoded.header.voxel_size_mm(),
            affine,
            data: decoded.data,
        }
    }
}

/// Loads the first 3D volume of a NIfTI-1/2 file (.nii or .nii.gz), streaming: the
/// header is checked before anything large is allocated.
pub fn load_volume(path: &Path) -> Result<Volume, ImagingError> {
    Ok(Volume::from_decoded(nifti::decode_file(path)?))
}

/// [`load_volume`], with the counts of the volume's stored integers where its header
/// scales them ([`nifti::ScaledCounts`]), which preprocessing reads its percentiles from.
pub fn load_volume_with_scaled_counts(
    path: &Path,
) -> Result<(Volume, Option<nifti::ScaledCounts>), ImagingError> {
    let (decoded, counts) = nifti::decode_file_with_scaled_counts(path)?;
    Ok((Volume::from_decoded(decoded), counts))
}
