//! NIfTI-1 and NIfTI-2 headers and voxel data, gzip-compressed or not, behind one type.
//!
//! Both header layouts are parsed here with the byte order `sizeof_hdr` declares, and
//! voxel data is read as a stream: the header comes first, every size it implies is
//! checked (overflow, per-axis and per-volume caps) before anything large is allocated,
//! and a gzip stream is inflated no further than the data the header describes.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::{ImagingError, stats};

const NIFTI1_HEADER_SIZE: usize = 348;
const NIFTI2_HEADER_SIZE: usize = 540;
/// Single-file NIfTI data cannot start before the header plus the 4-byte extender.
const NIFTI1_MIN_VOX_OFFSET: u64 = 352;
const NIFTI2_MIN_VOX_OFFSET: u64 = 544;
/// The largest size along one axis: the store keeps dims in INTEGER columns.
pub const MAX_DIM: i64 = i32::MAX as i64;
/// The most voxels in one 3D volume cdwqc decodes (4 GiB as `f32`): far above any
/// brain MRI, far below what would exhaust a workstation.
pub const MAX_VOXELS_PER_VOLUME: u64 = 1 << 30;
/// The most voxel data (all volumes) cdwqc reads through to check a file is whole.
pub const MAX_DATA_BYTES: u64 = 32 << 30;
/// How far a gzip stream may run past the header and voxel data it describes before it
/// is refused as a decompression bomb.
pub const GZIP_TRAILING_SLACK: u64 = 1 << 20;
/// Voxel bytes are read and converted this many at a time (a multiple of every width).
const CHUNK_BYTES: usize = 1 << 20;
/// The largest gzip file (compressed) read whole and the largest inflated size inflated
/// in one buffer by libdeflate; beyond, the streaming inflater (4D series, mostly) keeps
/// memory to the first volume.
pub const WHOLE_INFLATE_MAX: u64 = 256 << 20;
/// DEFLATE cannot inflate beyond about 1032 bytes per compressed byte: an inflated size
/// claimed beyond that is a lie and never allocated.
const DEFLATE_MAX_RATIO: u64 = 1032;

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

    /// Whether the type stores integers.
    pub fn is_integer(self) -> bool {
        !matches!(self, Self::Float32 | Self::Float64)
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

/// Where the voxel data of a header lies, every size computed with overflow checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLayout {
    pub voxels_per_volume: u64,
    pub n_volumes: u64,
    /// Bytes of one 3D volume.
    pub volume_bytes: u64,
    /// Bytes of all volumes.
    pub data_bytes: u64,
    /// Byte offset of the first voxel (`vox_offset`).
    pub start: u64,
    /// `start + data_bytes`: where the data the header describes ends.
    pub end: u64,
}

impl Header {
    /// Voxel counts along the three spatial axes (0 for a negative size, which
    /// [`parse_header`] never lets through).
    pub fn spatial_dims(&self) -> [usize; 3] {
        [1, 2, 3].map(|i| usize::try_from(self.dim[i].clamp(0, MAX_DIM)).unwrap_or(0))
    }

    /// Number of 3D volumes (product of dims 4 to `dim[0]`), saturating.
    pub fn n_volumes(&self) -> u64 {
        let n = self.dim[0].clamp(0, 7) as usize;
        (4..=n)
            .map(|i| self.dim[i].max(1) as u64)
            .fold(1u64, u64::saturating_mul)
    }

    /// Voxels in one 3D volume, saturating.
    pub fn voxels_per_volume(&self) -> u64 {
        self.spatial_dims()
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
    }

    /// Where the voxel data lies, or why the header's sizes cannot be honoured:
    /// an overflowing product or more than cdwqc decodes.
    pub fn layout(&self) -> Result<DataLayout, String> {
        let ndim = self.dim[0].clamp(0, 7) as usize;
        let shape = &self.dim[1..=ndim.max(3)];
        let mut voxels_per_volume = 1u64;
        for &d in &self.dim[1..=3] {
            voxels_per_volume = u64::try_from(d)
                .ok()
                .and_then(|d| voxels_per_volume.checked_mul(d))
                .ok_or_else(|| {
                    format!(
                        "shape {}: the voxel count overflows",
                        crate::display::shape(shape)
                    )
                })?;
        }
        if voxels_per_volume > MAX_VOXELS_PER_VOLUME {
            return Err(format!(
                "shape {} has {voxels_per_volume} voxels per volume, more than the {MAX_VOXELS_PER_VOLUME} cdwqc decodes",
                crate::display::shape(shape)
            ));
        }
        let mut n_volumes = 1u64;
        for &d in &self.dim[4..=ndim.max(3)] {
            n_volumes = u64::try_from(d.max(1))
                .ok()
                .and_then(|d| n_volumes.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    format!(
                        "shape {}: the volume count overflows",
                        crate::display::shape(shape)
                    )
                })?;
        }
        let volume_bytes = voxels_per_volume * self.datatype.bytes() as u64;
        let data_bytes = volume_bytes
            .checked_mul(n_volumes)
            .filter(|&b| b <= MAX_DATA_BYTES)
            .ok_or_else(|| {
                format!(
                    "shape {} of {} needs more than the {MAX_DATA_BYTES} bytes of voxel data cdwqc reads",
                    crate::display::shape(shape),
                    self.datatype.name()
                )
            })?;
        let end = self.vox_offset.checked_add(data_bytes).ok_or_else(|| {
            format!(
                "vox_offset {} plus {data_bytes} bytes of voxel data overflows",
                self.vox_offset
            )
        })?;
        Ok(DataLayout {
            voxels_per_volume,
            n_volumes,
            volume_bytes,
            data_bytes,
            start: self.vox_offset,
            end,
        })
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

    /// Whether every decoded intensity is an integer (a whole-valued float): stored as
    /// integers and scaled by one and a whole offset, or not at all.
    pub fn intensities_are_integers(&self) -> bool {
        let (slope, inter) = self.scaling();
        self.datatype.is_integer() && slope == 1.0 && inter.fract() == 0.0
    }

    /// The scaling of stored integers whose scaled values are not all integers (a
    /// fractional slope or offset): `(slope, inter)`, applied by [`scale_intensity`].
    pub fn integer_scaling(&self) -> Option<(f64, f64)> {
        (self.datatype.is_integer() && !self.intensities_are_integers()).then(|| self.scaling())
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

/// Whether `bytes` start as a gzip file does.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// A byte stream being read for one file: read errors named after the file (and
/// reported as a corrupt gzip stream when inflating), a count of bytes consumed.
struct Input<'p, R> {
    path: &'p Path,
    reader: R,
    gzip: bool,
    /// Bytes read already but not yet consumed (the header block past `vox_offset`).
    pending: Vec<u8>,
    pending_at: usize,
}

impl<'p, R: Read> Input<'p, R> {
    fn new(path: &'p Path, reader: R, gzip: bool) -> Self {
        Self {
            path,
            reader,
            gzip,
            pending: Vec::new(),
            pending_at: 0,
        }
    }

    fn error(&self, e: std::io::Error) -> ImagingError {
        if self.gzip {
            ImagingError::Gzip {
                path: self.path.to_path_buf(),
                detail: e.to_string(),
            }
        } else {
            ImagingError::io(self.path, e)
        }
    }

    /// Fills `buf` unless the stream ends first; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ImagingError> {
        let mut filled = 0;
        let pending = &self.pending[self.pending_at..];
        if !pending.is_empty() {
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            self.pending_at += n;
            filled = n;
        }
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error(e)),
            }
        }
        Ok(filled)
    }

    /// Reads and discards up to `n` bytes; returns how many there were.
    fn skip(&mut self, n: u64) -> Result<u64, ImagingError> {
        let mut scratch = [0u8; 8192];
        let mut skipped = 0u64;
        while skipped < n {
            let want = (n - skipped).min(scratch.len() as u64) as usize;
            let got = self.fill(&mut scratch[..want])?;
            skipped += got as u64;
            if got < want {
                break;
            }
        }
        Ok(skipped)
    }
}

/// Opens a regular file for reading, and only one: returns it, bounded to the size it
/// had when opened, with that size.
///
/// - Anything else is refused before it is opened (a device may act on an open), and
///   again on the open handle, since the name may have been swapped for a FIFO since.
/// - The open never blocks (`O_NONBLOCK`, which regular files ignore).
/// - A file whose size is 0 is refused without a read: `/proc` and tracefs files say
///   so and then read without end (a pagemap filled memory; a trace pipe hung import).
/// - No read goes past the size, so a file that grows while read cannot either.
pub fn open_regular(path: &Path) -> Result<(std::io::Take<File>, u64), ImagingError> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || ImagingError::NotRegularFile {
        path: PathBuf::from(path),
    };
    let meta = std::fs::metadata(path).map_err(|e| ImagingError::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| ImagingError::io(path, e))?;
    let meta = file.metadata().map_err(|e| ImagingError::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() == 0 {
        return Err(ImagingError::Empty {
            path: PathBuf::from(path),
        });
    }
    Ok((file.take(meta.len()), meta.len()))
}

/// Opens a file as a byte stream ([`open_regular`]), sniffs gzip from the first bytes.
/// Returns the stream (the sniffed bytes put back), whether it is gzip, and the file's
/// length.
fn open_stream(path: &Path) -> Result<(impl Read, bool, u64), ImagingError> {
    let (file, len) = open_regular(path)?;
    let (magic, reader) = sniff(path, BufReader::with_capacity(1 << 16, file))?;
    Ok((reader, is_gzip(&magic), len))
}

/// Reads the first two bytes of a stream and hands back a stream that still starts
/// with them.
pub fn sniff<R: Read>(path: &Path, mut reader: R) -> Result<(Vec<u8>, impl Read), ImagingError> {
    let mut magic = [0u8; 2];
    let got = Input::new(path, &mut reader, false).fill(&mut magic)?;
    let magic = magic[..got].to_vec();
    Ok((magic.clone(), std::io::Cursor::new(magic).chain(reader)))
}

/// Decompresses a file's bytes when they are gzip, whatever the file name says,
/// inflating no further than the header and voxel data the header describes.
pub fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, ImagingError> {
    if !is_gzip(&raw) {
        return Ok(raw);
    }
    if let Some((mut whole, described_end)) = inflate_whole(path, &raw) {
        whole.truncate(described_end as usize);
        return Ok(whole);
    }
    let mut input = Input::new(path, MultiGzDecoder::new(raw.as_slice()), true);
    let mut head = vec![0u8; NIFTI2_HEADER_SIZE];
    let got = input.fill(&mut head)?;
    head.truncate(got);
    let header = parse_header(path, &head)?;
    let end = header.layout().map_err(|detail| ImagingError::BadHeader {
        path: path.to_path_buf(),
        detail,
    })?;
    let mut out = head;
    let wanted = end.end.saturating_sub(out.len() as u64);
    let inflated = (&mut input.reader).take(wanted).read_to_end(&mut out);
    inflated.map_err(|e| input.error(e))?;
    refuse_trailing_inflation(&mut input, end.end)?;
    Ok(out)
}

/// Inflates a whole gzip file in one buffer with libdeflate when that is safe and its
/// sizes agree: the inflated size must lie between the end of the data its NIfTI header
/// describes and [`GZIP_TRAILING_SLACK`] beyond (what the streaming path accepts), be
/// congruent to the gzip trailer's ISIZE (the size mod 2^32: it only picks the one
/// candidate, since whoever wrote the file chose it), be no more than DEFLATE can
/// produce from the file's bytes, and the file one gzip member that inflates to exactly
/// that size with a good CRC. Returns the inflated bytes and the end of the described
/// data; `None` hands the file to the streaming inflater, which decides what else is
/// acceptable and words every error.
fn inflate_whole(path: &Path, raw: &[u8]) -> Option<(Vec<u8>, u64)> {
    if raw.len() as u64 > WHOLE_INFLATE_MAX {
        return None;
    }
    let mut head = vec![0u8; NIFTI2_HEADER_SIZE];
    let got = Input::new(path, MultiGzDecoder::new(raw), true)
        .fill(&mut head)
        .ok()?;
    head.truncate(got);
    let described_end = parse_header(path, &head).ok()?.layout().ok()?.end;
    let trailer: [u8; 4] = raw.get(raw.len().checked_sub(4)?..)?.try_into().ok()?;
    let isize_mod = u64::from(u32::from_le_bytes(trailer));
    let size = described_end + (isize_mod.wrapping_sub(described_end) & 0xFFFF_FFFF);
    if size - described_end > GZIP_TRAILING_SLACK
        || size > WHOLE_INFLATE_MAX
        || size > (raw.len() as u64).saturating_mul(DEFLATE_MAX_RATIO)
    {
        return None;
    }
    let whole = super::gunzip::inflate_single_member(raw, usize::try_from(size).ok()?)?;
    (whole.len() as u64 == size).then_some((whole, described_end))
}

/// After the data a gzip header describes: the stream must end within
/// [`GZIP_TRAILING_SLACK`] bytes (reading to its end also checks its CRC).
fn refuse_trailing_inflation<R: Read>(
    input: &mut Input<'_, R>,
    described: u64,
) -> Result<(), ImagingError> {
    let extra = input.skip(GZIP_TRAILING_SLACK + 1)?;
    if extra > GZIP_TRAILING_SLACK {
        return Err(ImagingError::Inflation {
            path: input.path.to_path_buf(),
            detail: format!(
                "more than {GZIP_TRAILING_SLACK} bytes past the {described} bytes of header and voxel data its header describes (a decompression bomb?)"
            ),
        });
    }
    Ok(())
}

/// Reads only as much of a file as the header needs, decompressing a gzip prefix.
pub fn read_header_file(path: &Path) -> Result<Header, ImagingError> {
    let (reader, _, _) = open_stream(path)?;
    read_header(path, reader)
}

/// Reads only as much of a stream holding a file as stored (gzip or not) as the
/// header needs.
pub fn read_header<R: Read>(path: &Path, reader: R) -> Result<Header, ImagingError> {
    let (magic, reader) = sniff(path, reader)?;
    if is_gzip(&magic) {
        read_header_from(path, MultiGzDecoder::new(reader), true)
    } else {
        read_header_from(path, reader, false)
    }
}

fn read_header_from<R: Read>(path: &Path, reader: R, gzip: bool) -> Result<Header, ImagingError> {
    let mut input = Input::new(path, reader, gzip);
    let mut head = [0u8; NIFTI2_HEADER_SIZE];
    let got = input.fill(&mut head)?;
    parse_header(path, &head[..got])
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
        (348, _) => parse_nifti1(path, bytes, true)?,
        (_, 348) => parse_nifti1(path, bytes, false)?,
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

/// A fixed-size C string field: up to the first NUL, invalid UTF-8 replaced.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// NIfTI-1 layout (nifti1.h): all offsets in bytes from the start of the file.
fn parse_nifti1(path: &Path, bytes: &[u8], little: bool) -> Result<Header, ImagingError> {
    if bytes.len() < NIFTI1_HEADER_SIZE {
        return Err(ImagingError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "NIfTI-1 header needs {NIFTI1_HEADER_SIZE} bytes, file has {}",
                bytes.len()
            ),
        });
    }
    if &bytes[344..348] != b"n+1\0" {
        return Err(ImagingError::NotNifti {
            path: path.to_path_buf(),
            detail: "magic is not \"n+1\" (a detached .hdr/.img pair is not supported)".into(),
        });
    }
    let f = Fields { bytes, little };
    let code = f.i16(70);
    let datatype = Datatype::from_code(code).ok_or_else(|| ImagingError::Unsupported {
        path: path.to_path_buf(),
        detail: format!("datatype code {code} is not a supported voxel type"),
    })?;
    let vox_offset = f.f32(108);
    if !vox_offset.is_finite() || vox_offset < 0.0 {
        return Err(ImagingError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("vox_offset {vox_offset} is not a valid byte offset"),
        });
    }
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for i in 0..8 {
        dim[i] = i64::from(f.i16(40 + 2 * i));
        pixdim[i] = f64::from(f.f32(76 + 4 * i));
    }
    let srow_at = |row: usize| [0, 1, 2, 3].map(|c| f64::from(f.f32(280 + 16 * row + 4 * c)));
    Ok(Header {
        version: 1,
        little_endian: little,
        dim,
        datatype,
        bitpix: f.i16(72),
        pixdim,
        // A float in NIfTI-1; readers take its integer part.
        vox_offset: vox_offset as u64,
        scl_slope: f64::from(f.f32(112)),
        scl_inter: f64::from(f.f32(116)),
        xyzt_units: bytes[123],
        qform_code: i32::from(f.i16(252)),
        sform_code: i32::from(f.i16(254)),
        quatern: [256, 260, 264].map(|at| f64::from(f.f32(at))),
        qoffset: [268, 272, 276].map(|at| f64::from(f.f32(at))),
        srow: [srow_at(0), srow_at(1), srow_at(2)],
        intent_code: i32::from(f.i16(68)),
        descrip: c_string(&bytes[148..228]),
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
    fn f32(&self, at: usize) -> f32 {
        f32::from_le_bytes(self.arr(at))
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
        descrip: c_string(&bytes[240..320]),
    })
}

/// Refuses headers cdwqc cannot index: too few or too many dimensions, sizes that are
/// not positive or do not fit the store, sizes whose products overflow or exceed what
/// cdwqc decodes, a voxel offset inside the header.
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
        if h.dim[i] > MAX_DIM {
            return Err(bad(format!(
                "dim[{i}] = {} is larger than the {MAX_DIM} cdwqc stores",
                h.dim[i]
            )));
        }
    }
    let shape: Vec<i64> = h.dim[1..=ndim as usize].to_vec();
    if ndim < 3 || h.dim[1] == 1 || h.dim[2] == 1 || h.dim[3] == 1 {
        return Err(ImagingError::NotVolume {
            path: path.to_path_buf(),
            detail: format!(
                "a 2D image (shape {}); cdwqc indexes 3D and 4D volumes",
                crate::display::shape(&shape)
            ),
        });
    }
    if ndim >= 5 && h.dim[5..=ndim as usize].iter().any(|&d| d > 1) {
        return Err(ImagingError::NotVolume {
            path: path.to_path_buf(),
            detail: format!(
                "a {ndim}D image (shape {}); cdwqc indexes 3D and 4D volumes",
                crate::display::shape(&shape)
            ),
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
    h.layout().map(|_| ()).map_err(bad)
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
    decode_scanned(path, bytes, false).map(|(decoded, _)| decoded)
}

/// [`decode`], and when `scan` is set the volume's [`stats::scan`] taken as it converts
/// (`None` where the stream's path decoded it).
fn decode_scanned(
    path: &Path,
    bytes: &[u8],
    scan: bool,
) -> Result<(Decoded, Option<stats::Scanned>), ImagingError> {
    // Anything the in-place checks refuse takes the stream's path, whose errors name
    // the problem.
    match decode_in_place(path, bytes, scan) {
        Some(decoded) => Ok(decoded),
        None => decode_stream(path, bytes, false, Some(bytes.len() as u64)).map(|d| (d, None)),
    }
}

/// [`decode`] of bytes that hold a valid header and all of its data: the first volume
/// converts straight from the bytes, instead of being copied chunk by chunk through the
/// stream's buffer first. `None` for anything else. The same result as the stream's
/// path (`decoding_in_place_equals_the_stream`). With `scan`, each block of converted
/// values is summed while it is in cache, as [`stats::scan`] would after (same test).
fn decode_in_place(
    path: &Path,
    bytes: &[u8],
    scan: bool,
) -> Option<(Decoded, Option<stats::Scanned>)> {
    let header = parse_header(path, &bytes[..bytes.len().min(NIFTI2_HEADER_SIZE)]).ok()?;
    let layout = header.layout().ok()?;
    let start = usize::try_from(layout.start).ok()?;
    let data_bytes = usize::try_from(layout.data_bytes).ok()?;
    let volume_bytes = usize::try_from(layout.volume_bytes).ok()?;
    let voxels = usize::try_from(layout.voxels_per_volume).ok()?;
    if bytes.len() < start || bytes.len() - start < data_bytes || volume_bytes > data_bytes {
        return None;
    }
    let raw = &bytes[start..start + volume_bytes];
    let (datatype, little) = (header.datatype, header.little_endian);
    let mut data = Vec::with_capacity(voxels);
    if !scan {
        convert_into(raw, datatype, little, &mut data);
        scale_in_place(&header, &mut data);
        return Some((Decoded { header, data }, None));
    }
    let width = datatype.bytes();
    // The centre's values first, converted and scaled as the volume's will be.
    let picked: Vec<u8> = raw
        .chunks_exact(width)
        .step_by(stats::centre_stride(voxels))
        .flatten()
        .copied()
        .collect();
    let mut strided = Vec::with_capacity(picked.len() / width);
    convert_into(&picked, datatype, little, &mut strided);
    scale_in_place(&header, &mut strided);
    let mut scanner = stats::Scanner::new(voxels, stats::deviation_centre(strided.into_iter()));
    for block in raw.chunks(stats::SCAN_BLOCK * width) {
        let from = data.len();
        convert_into(block, datatype, little, &mut data);
        scale_in_place(&header, &mut data[from..]);
        scanner.block(&data[from..]);
    }
    Some((Decoded { header, data }, Some(scanner.finish())))
}

/// Decodes a file's bytes as stored on disk: gzip or not, whatever the name says.
pub fn decode_file_bytes(path: &Path, raw: &[u8]) -> Result<Decoded, ImagingError> {
    decode_file_bytes_scanned(path, raw, false).map(|(decoded, _)| decoded)
}

/// [`decode_file_bytes`], and when `scan` is set the volume's [`stats::scan`] where it
/// could be taken while converting (`None` otherwise: the caller scans the volume).
pub fn decode_file_bytes_scanned(
    path: &Path,
    raw: &[u8],
    scan: bool,
) -> Result<(Decoded, Option<stats::Scanned>), ImagingError> {
    if is_gzip(raw) {
        // The whole-buffer result is the streaming one when both succeed; any failure is
        // left to the streaming path, whose errors name the problem.
        if let Some(decoded) =
            inflate_whole(path, raw).and_then(|(whole, _)| decode_scanned(path, &whole, scan).ok())
        {
            return Ok(decoded);
        }
        decode_stream(path, MultiGzDecoder::new(raw), true, None).map(|d| (d, None))
    } else {
        decode_scanned(path, raw, scan)
    }
}

/// Decodes a stream holding a file as stored on disk (its first bytes decide gzip);
/// `len` is the stream's length when known (a file's size).
pub fn decode_raw_stream<R: Read>(
    path: &Path,
    reader: R,
    len: Option<u64>,
) -> Result<Decoded, ImagingError> {
    let (magic, reader) = sniff(path, reader)?;
    if is_gzip(&magic) {
        decode_stream(path, MultiGzDecoder::new(reader), true, None)
    } else {
        decode_stream(path, reader, false, len)
    }
}

/// Decodes a NIfTI file from disk (`.nii` or `.nii.gz`), streaming.
pub fn decode_file(path: &Path) -> Result<Decoded, ImagingError> {
    let (mut reader, gzip, len) = open_stream(path)?;
    if gzip && len <= WHOLE_INFLATE_MAX {
        let mut raw = Vec::with_capacity(len as usize);
        reader
            .read_to_end(&mut raw)
            .map_err(|e| ImagingError::io(path, e))?;
        return decode_file_bytes(path, &raw);
    }
    if gzip {
        decode_stream(path, MultiGzDecoder::new(reader), true, None)
    } else {
        decode_stream(path, reader, false, Some(len))
    }
}

/// [`decode_file`], with the first volume's stored integers counted where the header
/// scales 8- or 16-bit integers ([`ScaledCounts`]): the percentiles of such a volume are
/// then read from 65,536 counters rather than selected among its floats. `None` for
/// every other volume, and wherever the file takes the stream's path.
pub fn decode_file_with_scaled_counts(
    path: &Path,
) -> Result<(Decoded, Option<ScaledCounts>), ImagingError> {
    let (mut reader, gzip, len) = open_stream(path)?;
    if !(gzip && len <= WHOLE_INFLATE_MAX) {
        return decode_file(path).map(|decoded| (decoded, None));
    }
    let mut raw = Vec::with_capacity(len as usize);
    reader
        .read_to_end(&mut raw)
        .map_err(|e| ImagingError::io(path, e))?;
    if let Some((whole, _)) = inflate_whole(path, &raw)
        && let Ok((decoded, _)) = decode_scanned(path, &whole, false)
    {
        let counts = ScaledCounts::of(&decoded.header, &whole);
        return Ok((decoded, counts));
    }
    decode_file_bytes(path, &raw).map(|decoded| (decoded, None))
}

/// How many voxels of a volume hold each stored integer, for a volume of 8- or 16-bit
/// integers that its header scales: every value is `scale_intensity(stored)`, a monotonic
/// function of the stored integer (a product and a sum, each rounded to nearest), so
/// the k-th smallest value is that of the k-th stored integer counted from the end the
/// slope's sign gives.
#[derive(Debug, Clone)]
pub struct ScaledCounts {
    lowest: i32,
    counts: Vec<u64>,
    slope: f64,
    inter: f64,
}

impl ScaledCounts {
    /// The counts of the first volume in `bytes` (header and data, decompressed), when
    /// its header scales 8- or 16-bit integers.
    pub fn of(header: &Header, bytes: &[u8]) -> Option<Self> {
        let (slope, inter) = header.scaling();
        if slope == 1.0 && inter == 0.0 {
            return None;
        }
        let layout = header.layout().ok()?;
        let start = usize::try_from(layout.start).ok()?;
        let volume_bytes = usize::try_from(layout.volume_bytes).ok()?;
        let raw = bytes.get(start..start.checked_add(volume_bytes)?)?;
        // Fewer voxels than a 32-bit counter holds, so none can wrap.
        if raw.len() >= u32::MAX as usize {
            return None;
        }
        let little = header.little_endian;
        let (lowest, counts) = match header.datatype {
            Datatype::Uint8 => (0, count_stored(raw.iter().map(|&b| usize::from(b)), 256)),
            Datatype::Int8 => (
                -128,
                count_stored(raw.iter().map(|&b| usize::from(b ^ 0x80)), 256),
            ),
            Datatype::Int16 | Datatype::Uint16 => {
                let signed = header.datatype == Datatype::Int16;
                let words = raw.chunks_exact(2).map(|c| {
                    let word = if little {
                        u16::from_le_bytes([c[0], c[1]])
                    } else {
                        u16::from_be_bytes([c[0], c[1]])
                    };
                    // Signed words offset so that the lowest value counts first.
                    usize::from(if signed { word ^ 0x8000 } else { word })
                });
                let lowest = if signed { -32_768 } else { 0 };
                (lowest, count_stored(words, 1 << 16))
            }
            _ => return None,
        };
        Some(Self {
            lowest,
            counts,
            slope,
            inter,
        })
    }

    /// The value of a stored integer, as the decoder scales it.
    pub fn value(&self, stored: i32) -> f32 {
        scale_intensity(stored as f32, self.slope, self.inter)
    }

    /// Voxels counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The values at `percentiles` with the ranks [`crate::imaging::preprocess::finite_percentiles`]
    /// takes (`round(p / 100 * (n - 1))`), the same bits; `None` when a value is not finite.
    pub fn percentiles<const N: usize>(&self, percentiles: [f64; N]) -> Option<[f32; N]> {
        let total = self.total();
        let first = self.counts.iter().position(|&c| c > 0)?;
        let last = self.counts.iter().rposition(|&c| c > 0)?;
        let value_of = |bin: usize| self.value(bin as i32 + self.lowest);
        let (low, high) = (value_of(first), value_of(last));
        if !(low.is_finite() && high.is_finite()) {
            return None;
        }
        // Monotonic: the values between the ends' are finite too, and they rise with the
        // stored integer unless the slope turns them round.
        let rising = low <= high;
        let ranks = percentiles.map(|p| {
            let rank = ((p / 100.0) * (total - 1) as f64).round() as u64;
            rank.min(total - 1)
        });
        let mut order: Vec<usize> = (0..N).collect();
        order.sort_by_key(|&i| ranks[i]);
        let bins = self.counts.len();
        let bin_at = |step: usize| if rising { step } else { bins - 1 - step };
        let mut out = [0.0f32; N];
        let (mut step, mut below) = (0usize, 0u64);
        for &i in &order {
            while below + self.counts[bin_at(step)] <= ranks[i] {
                below += self.counts[bin_at(step)];
                step += 1;
            }
            out[i] = value_of(bin_at(step));
        }
        Some(out)
    }
}

/// Counts of `indices` below `bins` (fewer than 2^32 of them), in four interleaved
/// counters per bin so that a run of one value (the background) does not make each
/// increment wait on the previous one.
fn count_stored(indices: impl Iterator<Item = usize>, bins: usize) -> Vec<u64> {
    const LANES: usize = 4;
    let mut lanes = vec![0u32; bins * LANES];
    for (n, index) in indices.enumerate() {
        lanes[index * LANES + (n & (LANES - 1))] += 1;
    }
    lanes
        .chunks_exact(LANES)
        .map(|c| c.iter().map(|&v| u64::from(v)).sum())
        .collect()
}

/// Decodes header and first volume from a stream of (decompressed) NIfTI bytes.
///
/// `gzip` says the stream is being inflated: read errors are then reported as a
/// corrupt gzip stream, and the stream must end soon after the data the header
/// describes. `len`, when the stream's length is known, proves the data is there
/// before anything is allocated for it; otherwise memory grows only with data read.
fn decode_stream<R: Read>(
    path: &Path,
    reader: R,
    gzip: bool,
    len: Option<u64>,
) -> Result<Decoded, ImagingError> {
    let mut input = Input::new(path, reader, gzip);
    let mut head = vec![0u8; NIFTI2_HEADER_SIZE];
    let got = input.fill(&mut head)?;
    head.truncate(got);
    let header = parse_header(path, &head)?;
    let layout = header.layout().map_err(|detail| ImagingError::BadHeader {
        path: path.to_path_buf(),
        detail,
    })?;
    let start = layout.start;
    let beyond_end = |total: u64| ImagingError::BadHeader {
        path: path.to_path_buf(),
        detail: format!("vox_offset {start} lies beyond the end of the data ({total} bytes)"),
    };
    let truncated = |available: u64| ImagingError::Truncated {
        path: path.to_path_buf(),
        detail: format!(
            "voxel data needs {} bytes after offset {start}, only {available} present",
            layout.data_bytes
        ),
    };
    if let Some(len) = len {
        if start > len {
            return Err(beyond_end(len));
        }
        if len - start < layout.data_bytes {
            return Err(truncated(len - start));
        }
    }
    let got = got as u64;
    if got > start {
        // NIfTI-1 data may start inside the first 540 bytes read for the header.
        input.pending = head.split_off(start as usize);
    } else {
        let skipped = input.skip(start - got)?;
        if skipped < start - got {
            return Err(beyond_end(got + skipped));
        }
    }

    let width = header.datatype.bytes();
    let total_voxels = layout.voxels_per_volume as usize;
    let mut data: Vec<f32> = Vec::new();
    if len.is_some() {
        data.reserve_exact(total_voxels);
    }
    let mut chunk = vec![0u8; (layout.volume_bytes as usize).min(CHUNK_BYTES)];
    let mut read = 0u64;
    while read < layout.volume_bytes {
        let want = ((layout.volume_bytes - read) as usize).min(chunk.len());
        let n = input.fill(&mut chunk[..want])?;
        if n < want {
            return Err(truncated(read + n as u64));
        }
        read += n as u64;
        if data.capacity() - data.len() < n / width {
            // Grow with the data proven so far, never past the volume.
            let grow = data.len().max(n / width).min(total_voxels - data.len());
            data.reserve_exact(grow);
        }
        convert_into(
            &chunk[..n],
            header.datatype,
            header.little_endian,
            &mut data,
        );
    }
    drop(chunk);
    let rest = layout.data_bytes - layout.volume_bytes;
    let skipped = input.skip(rest)?;
    if skipped < rest {
        return Err(truncated(layout.volume_bytes + skipped));
    }
    if gzip {
        refuse_trailing_inflation(&mut input, layout.end)?;
    }

    scale_in_place(&header, &mut data);
    Ok(Decoded { header, data })
}

/// Applies the header's scaling to converted values.
fn scale_in_place(header: &Header, data: &mut [f32]) {
    let (slope, inter) = header.scaling();
    if slope != 1.0 || inter != 0.0 {
        for v in data {
            *v = scale_intensity(*v, slope, inter);
        }
    }
}

/// A stored value (converted to single precision) as the header's scaling makes it, in
/// the decoder's arithmetic: what the quality metrics invert to bin scaled integers.
#[inline(always)]
pub fn scale_intensity(stored: f32, slope: f64, inter: f64) -> f32 {
    (f64::from(stored) * slope + inter) as f32
}

fn convert_into(raw: &[u8], datatype: Datatype, little: bool, out: &mut Vec<f32>) {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            out.extend(raw.chunks_exact($n).map(|c| {
                let mut a = [0u8; $n];
                a.copy_from_slice(c);
                let v = if little {
                    <$t>::from_le_bytes(a)
                } else {
                    <$t>::from_be_bytes(a)
                };
                v as f32
            }))
        };
    }
    match datatype {
        Datatype::Uint8 => out.extend(raw.iter().map(|&v| f32::from(v))),
        Datatype::Int8 => out.extend(raw.iter().map(|&v| f32::from(v as i8))),
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

/// Reads a whole regular file ([`open_regular`]).
pub fn read_file(path: &Path) -> Result<Vec<u8>, ImagingError> {
    let (mut file, len) = open_regular(path)?;
    let mut raw = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
    file.read_to_end(&mut raw)
        .map_err(|e| ImagingError::io(path, e))?;
    Ok(raw)
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

    /// `bytes` (a little-endian NIfTI-1 file from [`nifti1_bytes`] holding 16-bit
    /// voxels) with every header field the decoder reads, and the voxels, big-endian.
    fn big_endian_16(bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let swap = |out: &mut Vec<u8>, at: usize, width: usize| out[at..at + width].reverse();
        swap(&mut out, 0, 4);
        (40..56).step_by(2).for_each(|at| swap(&mut out, at, 2));
        swap(&mut out, 70, 2);
        swap(&mut out, 72, 2);
        (76..120).step_by(4).for_each(|at| swap(&mut out, at, 4));
        (352..out.len())
            .step_by(2)
            .for_each(|at| swap(&mut out, at, 2));
        out
    }

    #[test]
    fn scaled_counts_give_the_percentiles_selection_gives() {
        use crate::imaging::preprocess::finite_percentiles;
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let percentiles = [0.0, 0.5, 2.0, 37.3, 50.0, 98.0, 99.5, 99.95, 100.0];
        let dim = [3, 40, 30, 20, 1, 1, 1, 1];
        let voxels = 40 * 30 * 20;
        // (datatype code, bits, lowest, highest)
        let types: [(i16, i16, i32, i32); 4] = [
            (2, 8, 0, 255),
            (256, 8, -128, 127),
            (4, 16, -32_768, 32_767),
            (512, 16, 0, 65_535),
        ];
        let scalings: [(f32, f32); 10] = [
            (0.731, 12.5),
            (-2.25, 1000.3),
            (3.8, 0.0),
            (1e-3, -0.0),
            (-1e-3, -7.0),
            (7500.0, 1.0),
            (1.0, 0.25),
            // Subnormal products: -0.0 for negative stored integers, +0.0 for positive.
            (1e-45, 0.0),
            (-1e-45, 0.0),
            (1e-30, 0.0),
        ];
        let mut checked = 0;
        for (code, bits, lowest, highest) in types {
            // A background of one value, a body and a sparse tail at both ends.
            let background = rng.random_range(lowest..=highest.min(lowest + 40));
            let stored: Vec<i32> = (0..voxels)
                .map(|n| match n % 10 {
                    0..=5 => background,
                    6..=8 => rng.random_range(lowest..=highest).clamp(lowest, highest) / 2,
                    _ => rng.random_range(lowest..=highest),
                })
                .map(|v| v.clamp(lowest, highest))
                .collect();
            let data: Vec<u8> = stored
                .iter()
                .flat_map(|&v| {
                    if bits == 8 {
                        vec![v as u8]
                    } else {
                        (v as u16).to_le_bytes().to_vec()
                    }
                })
                .collect();
            for (slope, inter) in scalings {
                let mut bytes = nifti1_bytes(dim, code, bits, &data);
                bytes[112..116].copy_from_slice(&slope.to_le_bytes());
                bytes[116..120].copy_from_slice(&inter.to_le_bytes());
                let mut files = vec![bytes.clone()];
                if bits == 16 {
                    files.push(big_endian_16(&bytes));
                }
                for bytes in files {
                    let decoded = decode(Path::new("x.nii"), &bytes).expect("decodes");
                    let counts =
                        ScaledCounts::of(&decoded.header, &bytes).expect("scaled integers");
                    assert_eq!(counts.total(), voxels as u64);
                    let expected = finite_percentiles(&decoded.data, percentiles);
                    let got = counts.percentiles(percentiles).expect("finite");
                    assert_eq!(
                        got.map(f32::to_bits),
                        expected.map(f32::to_bits),
                        "type {code}, slope {slope}, intercept {inter}: {got:?} against {expected:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 60);
    }

    #[test]
    fn scaled_counts_are_only_for_scaled_small_integers_with_finite_values() {
        let data: Vec<u8> = (0..8i16).flat_map(|v| v.to_le_bytes()).collect();
        let mut bytes = nifti1_bytes([3, 2, 2, 2, 1, 1, 1, 1], 4, 16, &data);
        let header = |bytes: &[u8]| decode(Path::new("x"), bytes).expect("decodes").header;
        // Not scaled: the integer histogram of the floats serves.
        assert!(ScaledCounts::of(&header(&bytes), &bytes).is_none());
        bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
        assert!(ScaledCounts::of(&header(&bytes), &bytes).is_some());
        // Too short for the volume the header describes.
        assert!(ScaledCounts::of(&header(&bytes), &bytes[..bytes.len() - 1]).is_none());
        // Values past single precision: no percentiles (the floats' selection skips them).
        bytes[112..116].copy_from_slice(&3e38f32.to_le_bytes());
        let counts = ScaledCounts::of(&header(&bytes), &bytes).expect("counted");
        assert!(counts.percentiles([50.0]).is_none());
        // Floats and 32-bit integers are not counted.
        let floats: Vec<u8> = (0..8).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let mut bytes = nifti1_bytes([3, 2, 2, 2, 1, 1, 1, 1], 16, 32, &floats);
        bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
        assert!(ScaledCounts::of(&header(&bytes), &bytes).is_none());
        let ints: Vec<u8> = (0..8i32).flat_map(|v| v.to_le_bytes()).collect();
        let mut bytes = nifti1_bytes([3, 2, 2, 2, 1, 1, 1, 1], 8, 32, &ints);
        bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
        assert!(ScaledCounts::of(&header(&bytes), &bytes).is_none());
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

    pub(crate) fn nifti2_bytes(
        dim: [i64; 8],
        datatype: i16,
        vox_offset: i64,
        data: &[u8],
    ) -> Vec<u8> {
        let mut h = vec![0u8; 544];
        h[0..4].copy_from_slice(&540i32.to_le_bytes());
        h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
        h[12..14].copy_from_slice(&datatype.to_le_bytes());
        for (i, d) in dim.iter().enumerate() {
            h[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.to_le_bytes());
        }
        for i in 0..4 {
            h[104 + 8 * i..112 + 8 * i].copy_from_slice(&1.0f64.to_le_bytes());
        }
        h[168..176].copy_from_slice(&vox_offset.to_le_bytes());
        h.extend_from_slice(data);
        h
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).expect("gzip in memory");
        enc.finish().expect("gzip in memory")
    }

    fn nifti2_error(dim: [i64; 8], vox_offset: i64, data: &[u8]) -> ImagingError {
        decode(Path::new("x2.nii"), &nifti2_bytes(dim, 2, vox_offset, data)).unwrap_err()
    }

    #[test]
    fn decodes_a_tiny_nifti2_volume_plain_and_gzipped() {
        let bytes = nifti2_bytes([3, 2, 2, 2, 1, 1, 1, 1], 2, 544, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let d = decode(Path::new("t.nii"), &bytes).expect("decodes");
        assert_eq!(d.header.version, 2);
        assert_eq!(d.data, (1..=8).map(|v| v as f32).collect::<Vec<_>>());
        let z = decode_file_bytes(Path::new("t.nii.gz"), &gz(&bytes)).expect("decodes");
        assert_eq!(z.data, d.data);
    }

    #[test]
    fn a_voxel_count_that_wraps_around_is_refused() {
        // The crafted file that once passed as an empty volume: 2^62 * 2 * 2 wraps to 0.
        let crafted = nifti2_bytes([3, 1 << 62, 2, 2, 1, 1, 1, 1], 2, 544, &[0; 4]);
        assert_eq!(crafted.len(), 548);
        for (name, bytes) in [("c.nii", crafted.clone()), ("c.nii.gz", gz(&crafted))] {
            let err = decode_file_bytes(Path::new(name), &bytes).unwrap_err();
            assert!(matches!(err, ImagingError::BadHeader { .. }), "{err}");
            assert!(
                err.to_string().contains("dim[1] = 4611686018427387904"),
                "{err}"
            );
        }
        let max = i64::from(i32::MAX);
        let err = nifti2_error([3, max, max, max, 1, 1, 1, 1], 544, &[0; 4]);
        assert!(err.to_string().contains("voxel count overflows"), "{err}");
        let err = nifti2_error([4, 1024, 1024, 1024, max, 1, 1, 1], 544, &[0; 4]);
        assert!(err.to_string().contains("bytes of voxel data"), "{err}");
        let bytes = nifti1_bytes([3, 32767, 32767, 32767, 1, 1, 1, 1], 2, 8, &[0; 8]);
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let bytes = nifti1_bytes(
            [7, 32767, 32767, 32767, 32767, 32767, 32767, 32767],
            2,
            8,
            &[0; 8],
        );
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(err.to_string().contains("7D image"), "{err}");
    }

    #[test]
    fn nifti2_gets_the_malformed_cases_of_nifti1() {
        let err = nifti2_error([2, 4, 4, 1, 1, 1, 1, 1], 544, &[0; 16]);
        assert!(err.to_string().contains("2D image"), "{err}");
        let err = nifti2_error([5, 2, 2, 2, 1, 2, 1, 1], 544, &[0; 16]);
        assert!(err.to_string().contains("5D image"), "{err}");
        let err = nifti2_error([3, 4, 4, 4, 1, 1, 1, 1], 544, &[0; 10]);
        assert!(matches!(err, ImagingError::Truncated { .. }), "{err}");
        let err = nifti2_error([3, 4, -4, 4, 1, 1, 1, 1], 544, &[0; 64]);
        assert!(err.to_string().contains("dim[2] = -4"), "{err}");
        let err = nifti2_error([3, 2, 2, 2, 1, 1, 1, 1], 12, &[0; 8]);
        assert!(
            err.to_string().contains("points inside the header"),
            "{err}"
        );
        let err = nifti2_error([3, 2, 2, 2, 1, 1, 1, 1], 9000, &[0; 8]);
        assert!(err.to_string().contains("beyond the end"), "{err}");
        let err = nifti2_error([3, 2, 2, 2, 1, 1, 1, 1], -1, &[0; 8]);
        assert!(err.to_string().contains("negative"), "{err}");
        let err = nifti2_error([3, 2, 2, 2, 1, 1, 1, 1], i64::MAX, &[0; 8]);
        assert!(matches!(err, ImagingError::BadHeader { .. }), "{err}");
        let err = nifti2_error([0, 2, 2, 2, 1, 1, 1, 1], 544, &[0; 8]);
        assert!(err.to_string().contains("dim[0] = 0"), "{err}");
        let err = nifti2_error([3, 1 << 31, 2, 2, 1, 1, 1, 1], 544, &[0; 8]);
        assert!(err.to_string().contains("larger than"), "{err}");
        let mut bytes = nifti2_bytes([3, 2, 2, 2, 1, 1, 1, 1], 2, 544, &[0; 8]);
        bytes[4] = b'x';
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(matches!(err, ImagingError::NotNifti { .. }), "{err}");
        let bytes = nifti2_bytes([3, 2, 2, 2, 1, 1, 1, 1], 1536, 544, &[0; 8]);
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(matches!(err, ImagingError::Unsupported { .. }), "{err}");
        let err = decode(Path::new("x.nii"), &bytes[..300]).unwrap_err();
        assert!(matches!(err, ImagingError::Truncated { .. }), "{err}");
        // A 4D file whose later volumes are missing.
        let err = nifti2_error([4, 2, 2, 2, 3, 1, 1, 1], 544, &[0; 16]);
        assert!(err.to_string().contains("only 16 present"), "{err}");
    }

    #[test]
    fn huge_claims_on_short_data_fail_before_allocating() {
        // 2000^3 float32 is past the per-volume cap; 1000^3 is within it, so only the
        // missing data can refuse it (the file's length, before any allocation).
        let bytes = nifti1_bytes([3, 2000, 2000, 2000, 1, 1, 1, 1], 16, 32, &[0; 64]);
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let bytes = nifti1_bytes([3, 1000, 1000, 1000, 1, 1, 1, 1], 16, 32, &[0; 64]);
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(matches!(err, ImagingError::Truncated { .. }), "{err}");
        // Compressed, the length is unknown: the stream runs dry instead.
        let err = decode_file_bytes(Path::new("x.nii.gz"), &gz(&bytes)).unwrap_err();
        assert!(err.to_string().contains("only 64 present"), "{err}");
    }

    #[test]
    fn a_gzip_bomb_is_refused_after_the_promised_bytes() {
        let bytes = nifti2_bytes([3, 2, 2, 2, 1, 1, 1, 1], 2, 544, &[7; 8]);
        let bomb = crate::import::fuzz::gzip_bomb(&bytes, 64 << 20);
        let err = decode_file_bytes(Path::new("bomb.nii.gz"), &bomb).unwrap_err();
        assert!(matches!(err, ImagingError::Inflation { .. }), "{err}");
        assert!(err.to_string().contains("decompression bomb"), "{err}");
        let err = decompress(Path::new("bomb.nii.gz"), bomb).unwrap_err();
        assert!(matches!(err, ImagingError::Inflation { .. }), "{err}");
        // A little trailing data is tolerated.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 100]);
        assert!(decode_file_bytes(Path::new("p.nii.gz"), &gz(&padded)).is_ok());
        // A corrupt stream is named as such.
        let mut z = gz(&bytes);
        let n = z.len();
        z[n - 8] ^= 0xff;
        let err = decode_file_bytes(Path::new("c.nii.gz"), &z).unwrap_err();
        assert!(matches!(err, ImagingError::Gzip { .. }), "{err}");
    }

    /// The stream's decoding of the same bytes, and the bits of its values.
    fn streamed(path: &Path, bytes: &[u8]) -> Result<(Header, Vec<u32>), String> {
        decode_stream(path, bytes, false, Some(bytes.len() as u64))
            .map(|d| (d.header, d.data.iter().map(|v| v.to_bits()).collect()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn decoding_in_place_equals_the_stream() {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        // Every stored type, scaled and not, 3D and 4D, NIfTI-1 and -2.
        let values: Vec<u8> = (0..=255u8).cycle().take(8 * 2 * 2 * 2 * 3).collect();
        for (datatype, bitpix) in [(2, 8), (4, 16), (8, 32), (16, 32), (64, 64), (256, 8)] {
            for (dim4, scale) in [(1, false), (3, false), (1, true)] {
                let width = (bitpix / 8) as usize;
                let data = &values[..8 * width * dim4 as usize];
                let mut bytes = nifti1_bytes([4, 2, 2, 2, dim4, 1, 1, 1], datatype, bitpix, data);
                if scale {
                    bytes[112..116].copy_from_slice(&0.731f32.to_le_bytes());
                    bytes[116..120].copy_from_slice(&12.5f32.to_le_bytes());
                }
                files.push((format!("type {datatype} x{dim4} scaled {scale}"), bytes));
            }
        }
        files.push((
            "nifti-2".into(),
            nifti2_bytes([3, 2, 2, 2, 1, 1, 1, 1], 2, 544, &values[..8]),
        ));
        // Real files, inflated.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        for name in [
            "external/anatomical.nii",
            "external/example4d.nii.gz",
            "external/example_nifti2.nii.gz",
            "external/resampled_anat_moved.nii",
            "qform_oblique.nii.gz",
        ] {
            let raw = std::fs::read(root.join(name)).expect("test file");
            let bytes = if is_gzip(&raw) {
                let mut out = Vec::new();
                MultiGzDecoder::new(raw.as_slice())
                    .read_to_end(&mut out)
                    .expect("gzip");
                out
            } else {
                raw
            };
            files.push((name.into(), bytes));
        }
        let path = Path::new("x.nii");
        for (name, bytes) in &files {
            let stream = streamed(path, bytes);
            assert!(stream.is_ok(), "{name}: {stream:?}");
            let in_place = decode_in_place(path, bytes, false).map(|(d, _)| {
                (
                    d.header,
                    d.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                )
            });
            assert_eq!(in_place, stream.clone().ok(), "{name}");
            // Scanning while converting changes no value, and gives the scan after.
            let (scanned, scan) = decode_in_place(path, bytes, true).expect("decodes");
            let bits: Vec<u32> = scanned.data.iter().map(|v| v.to_bits()).collect();
            assert_eq!(Some(&bits), in_place.as_ref().map(|d| &d.1), "{name}");
            assert_eq!(
                format!("{:?}", scan.expect("scanned")),
                format!("{:?}", stats::scan(&scanned.data)),
                "{name}"
            );
            // Trailing bytes change nothing; any cut into the data leaves it to the
            // stream, which names the problem.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[7; 13]);
            assert_eq!(
                decode(path, &longer).map(|d| d.data.len()).ok(),
                in_place.as_ref().map(|d| d.1.len())
            );
            for cut in [1, 2, 7, bytes.len() / 2, bytes.len() - 300] {
                let short = &bytes[..bytes.len().saturating_sub(cut)];
                assert!(
                    decode_in_place(path, short, true).is_none(),
                    "{name} cut by {cut}"
                );
                assert_eq!(
                    decode(path, short).map_err(|e| e.to_string()).err(),
                    streamed(path, short).err(),
                    "{name} cut by {cut}"
                );
            }
        }
    }

    #[test]
    fn reads_big_endian_and_cuts_descrip_at_nul() {
        let mut bytes = nifti1_bytes([3, 2, 2, 2, 1, 1, 1, 1], 4, 16, &[0; 16]);
        // Swap every field written above to big-endian.
        let mut be = vec![0u8; bytes.len()];
        be[0..4].copy_from_slice(&348i32.to_be_bytes());
        for (i, d) in [3i16, 2, 2, 2, 1, 1, 1, 1].iter().enumerate() {
            be[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_be_bytes());
        }
        be[70..72].copy_from_slice(&4i16.to_be_bytes());
        be[108..112].copy_from_slice(&352.0f32.to_be_bytes());
        be[344..348].copy_from_slice(b"n+1\0");
        for v in 0..8i16 {
            be[352 + 2 * v as usize..354 + 2 * v as usize].copy_from_slice(&(v * 10).to_be_bytes());
        }
        let d = decode(Path::new("be.nii"), &be).expect("decodes");
        assert!(!d.header.little_endian);
        assert_eq!(d.data[3], 30.0);
        bytes[148..156].copy_from_slice(b"ab\0cd\0\0\0");
        let d = decode(Path::new("x.nii"), &bytes).expect("decodes");
        assert_eq!(d.header.descrip, "ab");
    }

    #[test]
    fn nifti1_byte_order_comes_from_sizeof_hdr() {
        // sizeof_hdr little-endian, dim[0] written big-endian: not a valid dim[0], never
        // a silently byte-swapped header.
        let mut bytes = nifti1_bytes([3, 2, 2, 2, 1, 1, 1, 1], 2, 8, &[0; 8]);
        bytes[40..42].copy_from_slice(&3i16.to_be_bytes());
        let err = decode(Path::new("x.nii"), &bytes).unwrap_err();
        assert!(err.to_string().contains("dim[0] = 768"), "{err}");
    }
}
