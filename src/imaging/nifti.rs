//! NIfTI-1 and NIfTI-2 headers and voxel data, gzip-compressed or not, behind one type.
//!
//! NIfTI-1 headers are parsed by the `nifti` crate; it does not read NIfTI-2, so the
//! 540-byte NIfTI-2 header is parsed here and both land in [`Header`].

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::ImagingError;

const NIFTI1_HEADER_SIZE: usize = 348;
const NIFTI2_HEADER_SIZE: usize = 540;
/// Single-file NIfTI data cannot start before the header plus the 4-byte extender.
const NIFTI1_MIN_VOX_OFFSET: u64 = 352;
const NIFTI2_MIN_VOX_OFFSET: u64 = 544;
/// The largest volume we agree to decode (bytes of voxel data): guards against headers
/// whose dims multiply to absurd sizes.
const MAX_VOXEL_BYTES: u64 = 8 << 30;

/// Voxel storage types cdwqc can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Uint8,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Float32,
    Float64,
}

impl Datatype {
    fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => Self::Uint8,
            256 => Self::Int8,
            4 => Self::Int16,
            512 => Self::Uint16,
            8 => Self::Int32,
            768 => Self::Uint32,
            1024 => Self::Int64,
            1280 => Self::Uint64,
            16 => Self::Float32,
            64 => Self::Float64,
            _ => return None,
        })
    }

    /// The NIfTI `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            Self::Uint8 => 2,
            Self::Int8 => 256,
            Self::Int16 => 4,
            Self::Uint16 => 512,
            Self::Int32 => 8,
            Self::Uint32 => 768,
            Self::Int64 => 1024,
            Self::Uint64 => 1280,
            Self::Float32 => 16,
            Self::Float64 => 64,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Self::Uint8 | Self::Int8 => 1,
            Self::Int16 | Self::Uint16 => 2,
            Self::Int32 | Self::Uint32 | Self::Float32 => 4,
            Self::Int64 | Self::Uint64 | Self::Float64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Uint8 => "uint8",
            Self::Int8 => "int8",
            Self::Int16 => "int16",
            Self::Uint16 => "uint16",
            Self::Int32 => "int32",
            Self::Uint32 => "uint32",
            Self::Int64 => "int64",
            Self::Uint64 => "uint64",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::Float32 | Self::Float64)
    }
}

/// The header fields cdwqc uses, whichever NIfTI version the file is.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    pub little_endian: bool,
    /// `dim[0..8]`: dim[0] is the number of dimensions.
    pub dim: [i64; 8],
    pub datatype: Datatype,
    pub bitpix: i16,
    pub pixdim: [f64; 8],
    pub vox_offset: u64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub xyzt_units: u8,
    pub qform_code: i32,
    pub sform_code: i32,
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
    pub intent_code: i32,
    pub descrip: String,
}

impl Header {
    /// Voxel counts along the three spatial axes.
    pub fn spatial_dims(&self) -> [usize; 3] {
        [
            self.dim[1] as usize,
            self.dim[2] as usize,
            self.dim[3] as usize,
        ]
    }

    /// Number of 3D volumes (product of dims 4 to 7).
    pub fn n_volumes(&self) -> u64 {
        let n = self.dim[0].clamp(0, 7) as usize;
        (4..=n).map(|i| self.dim[i].max(1) as u64).product()
    }

    /// Voxels in one 3D volume.
    pub fn voxels_per_volume(&self) -> u64 {
        self.spatial_dims().iter().map(|&d| d as u64).product()
    }

    /// Voxel sizes in millimetres, converting from metres or micrometres when
    /// `xyzt_units` says so.
    pub fn voxel_size_mm(&self) -> [f64; 3] {
        let scale = spatial_unit_to_mm(self.xyzt_units);
        [
            self.pixdim[1].abs() * scale,
            self.pixdim[2].abs() * scale,
            self.pixdim[3].abs() * scale,
        ]
    }

    /// Intensity scaling as the standard says to apply it: a zero or non-finite slope
    /// means no scaling.
    pub fn scaling(&self) -> (f64, f64) {
        if self.scl_slope == 0.0 || !self.scl_slope.is_finite() {
            (1.0, 0.0)
        } else {
            let inter = if self.scl_inter.is_finite() {
                self.scl_inter
            } else {
                0.0
            };
            (self.scl_slope, inter)
        }
    }
}

/// Millimetres per unit of `xyzt_units`' spatial part (unknown counts as millimetres).
pub(crate) fn spatial_unit_to_mm(xyzt_units: u8) -> f64 {
    match xyzt_units & 0x07 {
        1 => 1000.0,
        3 => 0.001,
        _ => 1.0,
    }
}

/// Whether a path names a NIfTI single file (`.nii` or `.nii.gz`, any case).
pub fn is_nifti_path(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Decompresses the file's bytes when they are gzip, whatever the file name says.
pub fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, ImagingError> {
    if !is_gzip(&raw) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 3);
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| ImagingError::Gzip {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    Ok(out)
}

/// Reads only as much of a file as the header needs, decompressing a gzip prefix.
pub fn read_header_file(path: &Path) -> Result<Header, ImagingError> {
    let file = File::open(path).map_err(|e| ImagingError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 2];
    let got = read_up_to(&mut reader, &mut magic).map_err(|e| ImagingError::io(path, e))?;
    let prefix = std::io::Cursor::new(magic[..got].to_vec()).chain(reader);
    let mut head = Vec::with_capacity(NIFTI2_HEADER_SIZE);
    let read = if is_gzip(&magic[..got]) {
        MultiGzDecoder::new(prefix)
            .take(NIFTI2_HEADER_SIZE as u64)
            .read_to_end(&mut head)
            .map_err(|e| ImagingError::Gzip {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })
    } else {
        prefix
            .take(NIFTI2_HEADER_SIZE as u64)
            .read_to_end(&mut head)
            .map_err(|e| ImagingError::io(path, e))
    };
    read?;
    parse_header(path, &head)
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Parses a NIfTI-1 or NIfTI-2 header from the first bytes of a (decompressed) file.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header, ImagingError> {
    let bad = |detail: String| ImagingError::BadHeader {
        path: path.to_path_buf(),
        detail,
    };
    if bytes.is_empty() {
        return Err(ImagingError::Empty {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() < 4 {
        return Err(bad(format!(
            "only {} bytes: too short for a NIfTI header",
            bytes.len()
        )));
    }
    let size_le = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let size_be = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let header = match (size_le, size_be) {
        (348, _) | (_, 348) => parse_nifti1(path, bytes)?,
        (540, _) => parse_nifti2(path, bytes, true)?,
        (_, 540) => parse_nifti2(path, bytes, false)?,
        _ => {
            return Err(ImagingError::NotNifti {
                path: path.to_path_buf(),
                detail: format!(
                    "starts with {:?} instead of a NIfTI-1 (348) or NIfTI-2 (540) header size",
                    String::from_utf8_lossy(&bytes[..4])
                ),
            });
        }
    };
    validate(path, &header)?;
    Ok(header)
}

fn parse_nifti1(path: &Path, bytes: &[u8]) -> Result<Header, ImagingError> {
    if bytes.len() < NIFTI1_HEADER_SIZE {
        return Err(ImagingError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "NIfTI-1 header needs {NIFTI1_HEADER_SIZE} bytes, file has {}",
                bytes.len()
            ),
        });
    }
    let h = nifti::NiftiHeader::from_reader(&bytes[..NIFTI1_HEADER_SIZE]).map_err(|e| {
        ImagingError::NotNifti {
            path: path.to_path_buf(),
            detail: format!("NIfTI-1 header rejected: {e}"),
        }
    })?;
    if &h.magic != b"n+1\0" {
        return Err(ImagingError::NotNifti {
            path: path.to_path_buf(),
            detail: "magic is not \"n+1\" (a detached .hdr/.img pair is not supported)".into(),
        });
    }
    let little_endian = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == 348;
    let datatype = Datatype::from_code(h.datatype).ok_or_else(|| ImagingError::Unsupported {
        path: path.to_path_buf(),
        detail: format!("datatype code {} is not a supported voxel type", h.datatype),
    })?;
    if !h.vox_offset.is_finite() || h.vox_offset < 0.0 {
        return Err(ImagingError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("vox_offset {} is not a valid byte offset", h.vox_offset),
        });
    }
    let mut dim = [0i64; 8];
    for (d, &v) in dim.iter_mut().zip(h.dim.iter()) {
        // The crate reads dims as u16; NIfTI-1 stores them as signed 16-bit.
        *d = i64::from(v as i16);
    }
    Ok(Header {
        version: 1,
        little_endian,
        dim,
        datatype,
        bitpix: h.bitpix,
        pixdim: h.pixdim.map(f64::from),
        vox_offset: h.vox_offset as u64,
        scl_slope: f64::from(h.scl_slope),
        scl_inter: f64::from(h.scl_inter),
        xyzt_units: h.xyzt_units,
        qform_code: i32::from(h.qform_code),
        sform_code: i32::from(h.sform_code),
        quatern: [
            f64::from(h.quatern_b),
            f64::from(h.quatern_c),
            f64::from(h.quatern_d),
        ],
        qoffset: [
            f64::from(h.quatern_x),
            f64::from(h.quatern_y),
            f64::from(h.quatern_z),
        ],
        srow: [
            h.srow_x.map(f64::from),
            h.srow_y.map(f64::from),
            h.srow_z.map(f64::from),
        ],
        intent_code: i32::from(h.intent_code),
        descrip: String::from_utf8_lossy(&h.descrip)
            .trim_end_matches('\0')
            .to_string(),
    })
}

/// Little helper reading fixed-offset fields with the file's byte order.
struct Fields<'a> {
    bytes: &'a [u8],
    little: bool,
}

impl Fields<'_> {
    fn arr<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.bytes[at..at + N]);
        if !self.little {
            a.reverse();
        }
        a
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.arr(at))
    }
    fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.arr(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.arr(at))
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.arr(at))
    }
}

/// NIfTI-2 layout (nifti2.h): all offsets in bytes from the start of the file.
fn parse_nifti2(path: &Path, bytes: &[u8], little: bool) -> Result<Header, ImagingError> {
    if bytes.len() < NIFTI2_HEADER_SIZE {
        return Err(ImagingError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "NIfTI-2 header needs {NIFTI2_HEADER_SIZE} bytes, file has {}",
                bytes.len()
            ),
        });
    }
    if &bytes[4..8] != b"n+2\0" {
        return Err(ImagingError::NotNifti {
            path: path.to_path_buf(),
            detail: "NIfTI-2 magic is not \"n+2\" (a detached .hdr/.img pair is not supported)"
                .into(),
        });
    }
    let f = Fields { bytes, little };
    let code = f.i16(12);
    let datatype = Datatype::from_code(code).ok_or_else(|| ImagingError::Unsupported {
        path: path.to_path_buf(),
        detail: format!("datatype code {code} is not a supported voxel type"),
    })?;
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for i in 0..8 {
        dim[i] = f.i64(16 + 8 * i);
        pixdim[i] = f.f64(104 + 8 * i);
    }
    let vox_offset = f.i64(168);
    if vox_offset < 0 {
        return Err(ImagingError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("vox_offset {vox_offset} is negative"),
        });
    }
    let srow = [
        [f.f64(400), f.f64(408), f.f64(416), f.f64(424)],
        [f.f64(432), f.f64(440), f.f64(448), f.f64(456)],
        [f.f64(464), f.f64(472), f.f64(480), f.f64(488)],
    ];
    Ok(Header {
        version: 2,
        little_endian: little,
        dim,
        datatype,
        bitpix: f.i16(14),
        pixdim,
        vox_offset: vox_offset as u64,
        scl_slope: f.f64(176),
        scl_inter: f.f64(184),
        xyzt_units: f.i32(500) as u8,
        qform_code: f.i32(344),
        sform_code: f.i32(348),
        quatern: [f.f64(352), f.f64(360), f.f64(368)],
        qoffset: [f.f64(376), f.f64(384), f.f64(392)],
        srow,
        intent_code: f.i32(504),
        descrip: String::from_utf8_lossy(&bytes[240..320])
            .trim_end_matches('\0')
            .to_string(),
    })
}

/// Refuses headers cdwqc cannot index: too few or too many dimensions, non-positive
/// sizes, a voxel offset inside the header.
fn validate(path: &Path, h: &Header) -> Result<(), ImagingError> {
    let bad = |detail: String| ImagingError::BadHeader {
        path: path.to_path_buf(),
        detail,
    };
    let ndim = h.dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(bad(format!("dim[0] = {ndim}, must be 1 to 7")));
    }
    for i in 1..=ndim as usize {
        if h.dim[i] < 1 {
            return Err(bad(format!(
                "dim[{i}] = {} is not a positive size",
                h.dim[i]
            )));
        }
    }
    let shape: Vec<i64> = h.dim[1..=ndim as usize].to_vec();
    if ndim < 3 || h.dim[1] == 1 || h.dim[2] == 1 || h.dim[3] == 1 {
        return Err(ImagingError::NotVolume {
            path: path.to_path_buf(),
            detail: format!("a 2D image (shape {shape:?}); cdwqc indexes 3D and 4D volumes"),
        });
    }
    if ndim >= 5 && h.dim[5..=ndim as usize].iter().any(|&d| d > 1) {
        return Err(ImagingError::NotVolume {
            path: path.to_path_buf(),
            detail: format!("a {ndim}D image (shape {shape:?}); cdwqc indexes 3D and 4D volumes"),
        });
    }
    let min_offset = if h.version == 1 {
        NIFTI1_MIN_VOX_OFFSET
    } else {
        NIFTI2_MIN_VOX_OFFSET
    };
    if h.vox_offset < min_offset {
        return Err(bad(format!(
            "vox_offset {} points inside the header (must be at least {min_offset})",
            h.vox_offset
        )));
    }
    let bytes = h
        .voxels_per_volume()
        .saturating_mul(h.datatype.bytes() as u64);
    if bytes > MAX_VOXEL_BYTES {
        return Err(bad(format!(
            "shape {shape:?} needs {bytes} bytes per volume, more than cdwqc decodes"
        )));
    }
    Ok(())
}

/// A decoded file: its header and the intensities of its first 3D volume.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub header: Header,
    /// Scaled intensities of volume 0, i fastest.
    pub data: Vec<f32>,
}

/// Decodes header and first volume from a file's (already decompressed) bytes.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Decoded, ImagingError> {
    let header = parse_header(path, bytes)?;
    let n = header.voxels_per_volume() as usize;
    let width = header.datatype.bytes();
    let start = header.vox_offset as usize;
    let needed_all = (header.voxels_per_volume() * header.n_volumes()) as usize * width;
    if start > bytes.len() {
        return Err(ImagingError::BadHeader {
            path: path.to_path_buf(),
            detail: format!(
                "vox_offset {start} lies beyond the end of the data ({} bytes)",
                bytes.len()
            ),
        });
    }
    let available = bytes.len() - start;
    if available < needed_all {
        return Err(ImagingError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "voxel data needs {needed_all} bytes after offset {start}, only {available} present"
            ),
        });
    }
    let raw = &bytes[start..start + n * width];
    let (slope, inter) = header.scaling();
    let mut data = convert(raw, header.datatype, header.little_endian);
    if slope != 1.0 || inter != 0.0 {
        for v in &mut data {
            *v = (f64::from(*v) * slope + inter) as f32;
        }
    }
    Ok(Decoded { header, data })
}

fn convert(raw: &[u8], datatype: Datatype, little: bool) -> Vec<f32> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            raw.chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    let v = if little {
                        <$t>::from_le_bytes(a)
                    } else {
                        <$t>::from_be_bytes(a)
                    };
                    v as f32
                })
                .collect()
        };
    }
    match datatype {
        Datatype::Uint8 => raw.iter().map(|&v| f32::from(v)).collect(),
        Datatype::Int8 => raw.iter().map(|&v| f32::from(v as i8)).collect(),
        Datatype::Int16 => conv!(i16, 2),
        Datatype::Uint16 => conv!(u16, 2),
        Datatype::Int32 => conv!(i32, 4),
        Datatype::Uint32 => conv!(u32, 4),
        Datatype::Int64 => conv!(i64, 8),
        Datatype::Uint64 => conv!(u64, 8),
        Datatype::Float32 => conv!(f32, 4),
        Datatype::Float64 => conv!(f64, 8),
    }
}

/// Reads a whole file, refusing anything but a regular file (a FIFO would block).
pub fn read_file(path: &Path) -> Result<Vec<u8>, ImagingError> {
    let meta = std::fs::metadata(path).map_err(|e| ImagingError::io(path, e))?;
    if !meta.is_file() {
        return Err(ImagingError::NotRegularFile {
            path: PathBuf::from(path),
        });
    }
    std::fs::read(path).map_err(|e| ImagingError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn nifti1_bytes(dim: [i16; 8], datatype: i16, bitpix: i16, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        h[0..4].copy_from_slice(&348i32.to_le_bytes());
        for (i, d) in dim.iter().enumerate() {
            h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        h[70..72].copy_from_slice(&datatype.to_le_bytes());
        h[72..74].copy_from_slice(&bitpix.to_le_bytes());
        for i in 0..4 {
            h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1.0f32.to_le_bytes());
        }
        h[108..112].copy_from_slice(&352.0f32.to_le_bytes());
        h[344..348].copy_from_slice(b"n+1\0");
        h.extend_from_slice(data);
        h
    }

    #[test]
    fn decodes_a_tiny_int16_volume() {
        let data: Vec<u8> = (0..8i16).flat_map(|v| v.to_le_bytes()).collect();
        let bytes = nifti1_bytes([3, 2, 2, 2, 1, 1, 1, 1], 4, 16, &data);
        let d = decode(Path::new("t.nii"), &bytes).expect("decodes");
        assert_eq!(d.header.version, 1);
        assert_eq!(d.data, (0..8).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_a_2d_image() {
        let bytes = nifti1_bytes([2, 4, 4, 1, 1, 1, 1, 1], 2, 8, &[0; 16]);
        let err = decode(Path::new("flat.nii"), &bytes).unwrap_err();
        assert!(err.to_string().contains("2D image"), "{err}");
        assert!(err.to_string().contains("flat.nii"), "{err}");
    }

    #[test]
    fn refuses_a_5d_image() {
        let bytes = nifti1_bytes([5, 2, 2, 2, 1, 2, 1, 1], 2, 8, &[0; 16]);
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(err.to_string().contains("5D image"), "{err}");
    }

    #[test]
    fn refuses_missing_voxel_data() {
        let bytes = nifti1_bytes([3, 4, 4, 4, 1, 1, 1, 1], 2, 8, &[0; 10]);
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(matches!(err, ImagingError::Truncated { .. }), "{err}");
    }

    #[test]
    fn refuses_non_nifti_bytes() {
        let err = decode(Path::new("x.nii"), b"hello, this is not an image at all").unwrap_err();
        assert!(matches!(err, ImagingError::NotNifti { .. }), "{err}");
        let err = decode(Path::new("x.nii"), b"").unwrap_err();
        assert!(matches!(err, ImagingError::Empty { .. }), "{err}");
    }

    #[test]
    fn applies_scaling_and_ignores_zero_slope() {
        let mut bytes = nifti1_bytes([3, 2, 2, 2, 1, 1, 1, 1], 2, 8, &[1; 8]);
        bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
        bytes[116..120].copy_from_slice(&0.5f32.to_le_bytes());
        assert_eq!(decode(Path::new("x"), &bytes).expect("ok").data[0], 2.5);
        bytes[112..116].copy_from_slice(&0.0f32.to_le_bytes());
        assert_eq!(decode(Path::new("x"), &bytes).expect("ok").data[0], 1.0);
    }
}
