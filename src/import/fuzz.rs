//! A structured, seeded fuzzer for hostile NIfTI files: real and built-in NIfTI-1/2
//! seeds, mutated field by field (dims, datatype, offsets, scaling, orientation,
//! magic, sizes, extensions, truncation, bit flips, gzip framing, gzip bombs) and run
//! through every reader of NIfTI bytes: header-only reading (`cdwqc inspect`), the
//! per-file analysis `cdwqc import` runs, the viewer's slices and model preprocessing.
//!
//! A case passes when each reader returns a value or a typed error; it is a finding
//! when a reader panics, allocates more than the data it was given can justify, or
//! produces an image row the store cannot hold. Case `i` of seed `s` is the same bytes
//! on every machine, so a finding is reproduced from two numbers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flate2::{Compress, Compression, Crc, FlushCompress};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::analyse::{self, Outcome};
use crate::imaging::Volume;
use crate::imaging::nifti::{self, Datatype};
use crate::imaging::orientation::RasView;
use crate::imaging::preprocess::{PreprocessSpec, preprocess};
use crate::imaging::preview::{self, Plane};
use crate::store::images::ImageWrite;

// ---------------------------------------------------------------------------------
// Allocation probe

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

/// A global allocator (the system one) that remembers, per thread, the largest single
/// allocation since [`reset_largest_allocation`]. Binaries that run the fuzzer install
/// it with `#[global_allocator]` so absurd allocations are findings, not OOM kills.
pub struct LargestAllocation;

fn note_allocation(size: usize) {
    let _ = LARGEST_ALLOCATION.try_with(|largest| {
        if size > largest.get() {
            largest.set(size);
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping
// touches only a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Starts a new measurement on this thread.
pub fn reset_largest_allocation() {
    let _ = LARGEST_ALLOCATION.try_with(|largest| largest.set(0));
}

/// The largest single allocation on this thread since the last reset (0 when
/// [`LargestAllocation`] is not the global allocator).
pub fn largest_allocation() -> usize {
    LARGEST_ALLOCATION.try_with(Cell::get).unwrap_or(0)
}

/// Whether [`LargestAllocation`] is the global allocator of this process.
pub fn allocation_probe_installed() -> bool {
    reset_largest_allocation();
    let probe = std::hint::black_box(vec![0u8; 1 << 20]);
    drop(probe);
    largest_allocation() >= 1 << 20
}

// ---------------------------------------------------------------------------------
// Seeds

/// A well-formed NIfTI file to mutate, held decompressed.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Real files larger than this (decompressed) are left out: they would slow every
/// case that draws them without exercising anything the small ones do not.
pub const MAX_SEED_BYTES: usize = 2 << 20;

/// What a built-in seed holds.
struct SeedSpec {
    version: u8,
    little: bool,
    dim: [i64; 8],
    datatype: Datatype,
    pixdim: [f64; 8],
    /// Extension bytes between the header and the data (0: none).
    extension: usize,
    scl: (f64, f64),
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    xyzt_units: u8,
    descrip: &'static [u8],
}

/// Field offsets of one header layout.
#[derive(Debug, Clone, Copy)]
struct Offsets {
    header_size: usize,
    dim: usize,
    /// Width in bytes of integer fields dim / slice_start.
    dim_w: usize,
    datatype: usize,
    bitpix: usize,
    intent_code: usize,
    intent_w: usize,
    pixdim: usize,
    /// Width in bytes of float fields.
    float_w: usize,
    vox_offset: usize,
    scl_slope: usize,
    scl_inter: usize,
    xyzt_units: usize,
    xyzt_w: usize,
    descrip: usize,
    qform_code: usize,
    sform_code: usize,
    code_w: usize,
    quatern: usize,
    qoffset: usize,
    srow: usize,
    magic: usize,
}

const NIFTI1: Offsets = Offsets {
    header_size: 348,
    dim: 40,
    dim_w: 2,
    datatype: 70,
    bitpix: 72,
    intent_code: 68,
    intent_w: 2,
    pixdim: 76,
    float_w: 4,
    vox_offset: 108,
    scl_slope: 112,
    scl_inter: 116,
    xyzt_units: 123,
    xyzt_w: 1,
    descrip: 148,
    qform_code: 252,
    sform_code: 254,
    code_w: 2,
    quatern: 256,
    qoffset: 268,
    srow: 280,
    magic: 344,
};

const NIFTI2: Offsets = Offsets {
    header_size: 540,
    dim: 16,
    dim_w: 8,
    datatype: 12,
    bitpix: 14,
    intent_code: 504,
    intent_w: 4,
    pixdim: 104,
    float_w: 8,
    vox_offset: 168,
    scl_slope: 176,
    scl_inter: 184,
    xyzt_units: 500,
    xyzt_w: 4,
    descrip: 240,
    qform_code: 344,
    sform_code: 348,
    code_w: 4,
    quatern: 352,
    qoffset: 376,
    srow: 400,
    magic: 4,
};

fn put_int(bytes: &mut [u8], at: usize, width: usize, value: i64, little: bool) {
    let mut le = [0u8; 8];
    le[..width].copy_from_slice(&value.to_le_bytes()[..width]);
    let field = &mut le[..width];
    if !little {
        field.reverse();
    }
    if let Some(dst) = bytes.get_mut(at..at + width) {
        dst.copy_from_slice(field);
    }
}

fn put_float(bytes: &mut [u8], at: usize, width: usize, value: f64, little: bool) {
    let le: Vec<u8> = if width == 4 {
        (value as f32).to_le_bytes().to_vec()
    } else {
        value.to_le_bytes().to_vec()
    };
    let mut field = le;
    if !little {
        field.reverse();
    }
    if let Some(dst) = bytes.get_mut(at..at + width) {
        dst.copy_from_slice(&field);
    }
}

fn put_value(bytes: &mut [u8], at: usize, datatype: Datatype, value: f64, little: bool) {
    let (width, le): (usize, Vec<u8>) = match datatype {
        Datatype::Uint8 => (1, vec![value.clamp(0.0, 255.0) as u8]),
        Datatype::Int8 => (1, vec![(value.clamp(-128.0, 127.0) as i8) as u8]),
        Datatype::Int16 => (2, (value as i16).to_le_bytes().to_vec()),
        Datatype::Uint16 => (2, (value as u16).to_le_bytes().to_vec()),
        Datatype::Int32 => (4, (value as i32).to_le_bytes().to_vec()),
        Datatype::Uint32 => (4, (value as u32).to_le_bytes().to_vec()),
        Datatype::Int64 => (8, (value as i64).to_le_bytes().to_vec()),
        Datatype::Uint64 => (8, (value as u64).to_le_bytes().to_vec()),
        Datatype::Float32 => (4, (value as f32).to_le_bytes().to_vec()),
        Datatype::Float64 => (8, value.to_le_bytes().to_vec()),
    };
    let mut field = le;
    if !little {
        field.reverse();
    }
    bytes[at..at + width].copy_from_slice(&field);
}

fn build_seed(spec: &SeedSpec) -> Vec<u8> {
    let o = if spec.version == 1 { NIFTI1 } else { NIFTI2 };
    let little = spec.little;
    let header_block = o.header_size + 4;
    let vox_offset = header_block + spec.extension;
    let ndim = spec.dim[0] as usize;
    let voxels: usize = spec.dim[1..=ndim].iter().map(|&d| d as usize).product();
    let width = spec.datatype.bytes();
    let mut b = vec![0u8; vox_offset + voxels * width];
    put_int(&mut b, 0, 4, o.header_size as i64, little);
    if spec.version == 1 {
        b[344..348].copy_from_slice(b"n+1\0");
    } else {
        b[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    }
    for (i, &d) in spec.dim.iter().enumerate() {
        put_int(&mut b, o.dim + o.dim_w * i, o.dim_w, d, little);
    }
    put_int(
        &mut b,
        o.datatype,
        2,
        i64::from(spec.datatype.code()),
        little,
    );
    put_int(&mut b, o.bitpix, 2, 8 * width as i64, little);
    for (i, &p) in spec.pixdim.iter().enumerate() {
        put_float(&mut b, o.pixdim + o.float_w * i, o.float_w, p, little);
    }
    put_float(&mut b, o.vox_offset, o.float_w, vox_offset as f64, little);
    if spec.version == 2 {
        put_int(&mut b, o.vox_offset, 8, vox_offset as i64, little);
    }
    put_float(&mut b, o.scl_slope, o.float_w, spec.scl.0, little);
    put_float(&mut b, o.scl_inter, o.float_w, spec.scl.1, little);
    put_int(
        &mut b,
        o.xyzt_units,
        o.xyzt_w,
        i64::from(spec.xyzt_units),
        little,
    );
    b[o.descrip..o.descrip + spec.descrip.len()].copy_from_slice(spec.descrip);
    put_int(
        &mut b,
        o.qform_code,
        o.code_w,
        i64::from(spec.qform_code),
        little,
    );
    put_int(
        &mut b,
        o.sform_code,
        o.code_w,
        i64::from(spec.sform_code),
        little,
    );
    for i in 0..3 {
        put_float(
            &mut b,
            o.quatern + o.float_w * i,
            o.float_w,
            spec.quatern[i],
            little,
        );
        put_float(
            &mut b,
            o.qoffset + o.float_w * i,
            o.float_w,
            spec.qoffset[i],
            little,
        );
        for c in 0..4 {
            put_float(
                &mut b,
                o.srow + o.float_w * (4 * i + c),
                o.float_w,
                spec.srow[i][c],
                little,
            );
        }
    }
    if spec.extension > 0 {
        // extender[0] = 1, then one extension: esize (a multiple of 16), ecode 6 (comment).
        b[o.header_size] = 1;
        put_int(&mut b, header_block, 4, spec.extension as i64, little);
        put_int(&mut b, header_block + 4, 4, 6, little);
        b[header_block + 8..vox_offset].fill(b'x');
    }
    for v in 0..voxels {
        // A smooth blob with a little texture, so previews and statistics have work.
        let value = ((v * 37) % 101) as f64 + (v % 7) as f64 * 3.0;
        put_value(&mut b, vox_offset + v * width, spec.datatype, value, little);
    }
    b
}

fn diag_srow(x: f64, y: f64, z: f64) -> [[f64; 4]; 3] {
    [
        [x, 0.0, 0.0, -10.0],
        [0.0, y, 0.0, -12.0],
        [0.0, 0.0, z, 8.0],
    ]
}

/// Small NIfTI-1 and NIfTI-2 files built in code, both byte orders, 3D and 4D, with
/// and without extensions, sform, qform or neither: the fuzzer needs no external data.
pub fn builtin_seeds() -> Vec<Seed> {
    let base = SeedSpec {
        version: 1,
        little: true,
        dim: [3, 6, 5, 4, 1, 1, 1, 1],
        datatype: Datatype::Int16,
        pixdim: [1.0, 1.0, 1.2, 2.5, 1.0, 0.0, 0.0, 0.0],
        extension: 0,
        scl: (0.0, 0.0),
        qform_code: 1,
        sform_code: 1,
        quatern: [0.0, 0.0, 0.0],
        qoffset: [-3.0, -2.0, 4.0],
        srow: diag_srow(1.0, 1.2, 2.5),
        xyzt_units: 2,
        descrip: b"cdwqc fuzz seed",
    };
    let oblique = [
        [0.9, -0.3, 0.1, 5.0],
        [0.3, 0.95, -0.2, -7.0],
        [-0.1, 0.2, 1.9, 3.0],
    ];
    let specs = [
        ("nifti1-le-int16-3d", SeedSpec { ..base }),
        (
            "nifti1-be-float32-4d-sform",
            SeedSpec {
                little: false,
                dim: [4, 5, 4, 3, 2, 1, 1, 1],
                datatype: Datatype::Float32,
                qform_code: 0,
                sform_code: 2,
                srow: oblique,
                ..base
            },
        ),
        (
            "nifti1-le-uint8-extension-scaled",
            SeedSpec {
                dim: [3, 4, 4, 4, 1, 1, 1, 1],
                datatype: Datatype::Uint8,
                extension: 32,
                scl: (2.0, -1.0),
                sform_code: 0,
                quatern: [0.0, std::f64::consts::FRAC_1_SQRT_2, 0.0],
                ..base
            },
        ),
        (
            "nifti1-le-float64-no-orientation-metres",
            SeedSpec {
                dim: [3, 3, 4, 5, 1, 1, 1, 1],
                datatype: Datatype::Float64,
                pixdim: [1.0, 0.001, 0.001, 0.002, 0.0, 0.0, 0.0, 0.0],
                qform_code: 0,
                sform_code: 0,
                xyzt_units: 1,
                ..base
            },
        ),
        (
            "nifti2-le-uint8-3d",
            SeedSpec {
                version: 2,
                dim: [3, 4, 3, 2, 1, 1, 1, 1],
                datatype: Datatype::Uint8,
                qform_code: 0,
                ..base
            },
        ),
        (
            "nifti2-be-float64-4d-qform",
            SeedSpec {
                version: 2,
                little: false,
                dim: [4, 3, 3, 3, 2, 1, 1, 1],
                datatype: Datatype::Float64,
                sform_code: 0,
                quatern: [0.1, -0.2, 0.3],
                pixdim: [-1.0, 2.0, 2.0, 2.0, 1.0, 0.0, 0.0, 0.0],
                ..base
            },
        ),
        (
            "nifti2-le-int32-extension",
            SeedSpec {
                version: 2,
                dim: [3, 5, 5, 5, 1, 1, 1, 1],
                datatype: Datatype::Int32,
                extension: 48,
                srow: oblique,
                ..base
            },
        ),
        (
            "nifti2-le-uint16-5d-singleton",
            SeedSpec {
                version: 2,
                dim: [5, 4, 4, 3, 1, 1, 1, 1],
                datatype: Datatype::Uint16,
                ..base
            },
        ),
    ];
    specs
        .into_iter()
        .map(|(name, spec)| Seed {
            name: name.to_string(),
            bytes: build_seed(&spec),
        })
        .collect()
}

/// Real NIfTI files as seeds (decompressed, at most [`MAX_SEED_BYTES`]): the files
/// given, and the NIfTI files inside the folders given. Unreadable files are skipped.
pub fn seeds_from(paths: &[PathBuf]) -> Vec<Seed> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                files.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| nifti::is_nifti_path(p)),
                );
            }
        } else if path.is_file() {
            files.push(path.clone());
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let raw = nifti::read_file(&path).ok()?;
            let bytes = nifti::decompress(&path, raw).ok()?;
            nifti::decode(&path, &bytes).ok()?;
            let name = path.file_name()?.to_string_lossy().into_owned();
            (bytes.len() <= MAX_SEED_BYTES).then_some(Seed { name, bytes })
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Gzip framing

fn deflate_segment(data: &[u8], level: Compression, flush: FlushCompress) -> Vec<u8> {
    let mut compress = Compress::new(level, false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(1024));
        }
        let before = compress.total_in();
        match compress.compress_vec(input, &mut out, flush) {
            Ok(flate2::Status::StreamEnd) => break,
            Ok(_) => {}
            Err(_) => break,
        }
        input = &input[(compress.total_in() - before) as usize..];
        if input.is_empty() && out.capacity() > out.len() {
            // A flush that left room in the buffer has written everything.
            if matches!(flush, FlushCompress::Full) {
                break;
            }
        }
    }
    out
}

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

fn crc_copy(crc: &Crc) -> Crc {
    let mut copy = Crc::new();
    copy.combine(crc);
    copy
}

/// One MiB of zeros deflated on its own and flushed, so it can be repeated.
fn zero_mebibyte() -> &'static (Vec<u8>, Crc) {
    static ZEROS: OnceLock<(Vec<u8>, Crc)> = OnceLock::new();
    ZEROS.get_or_init(|| {
        let zeros = vec![0u8; 1 << 20];
        let mut crc = Crc::new();
        crc.update(&zeros);
        (
            deflate_segment(&zeros, Compression::best(), FlushCompress::Full),
            crc,
        )
    })
}

/// A valid gzip file holding `prefix` followed by `zeros` zero bytes (rounded up to
/// whole MiB), built without ever holding the inflated bytes: a few MB of file that
/// inflate to as many GB.
pub fn gzip_bomb(prefix: &[u8], zeros: u64) -> Vec<u8> {
    let (block, block_crc) = zero_mebibyte();
    let blocks = zeros.div_ceil(1 << 20);
    let mut out = GZIP_HEADER.to_vec();
    out.extend_from_slice(&deflate_segment(
        prefix,
        Compression::fast(),
        FlushCompress::Full,
    ));
    out.reserve(block.len() * blocks as usize + 16);
    for _ in 0..blocks {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&deflate_segment(
        &[],
        Compression::fast(),
        FlushCompress::Finish,
    ));
    let mut crc = Crc::new();
    crc.update(prefix);
    // The CRC of `blocks` copies by doubling: CRC-32 combines without the data.
    let mut power = crc_copy(block_crc);
    let mut left = blocks;
    while left > 0 {
        if left & 1 == 1 {
            crc.combine(&power);
        }
        let same = crc_copy(&power);
        power.combine(&same);
        left >>= 1;
    }
    let total = prefix.len() as u64 + blocks * (1 << 20);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Mutations

/// One fuzz case: the bytes as they would lie on disk, and how they were made.
#[derive(Debug, Clone)]
pub struct Case {
    pub index: u64,
    pub seed_name: String,
    pub mutations: Vec<String>,
    /// `.nii.gz` when the bytes are gzip-framed.
    pub gzip: bool,
    /// The bytes the decoder may see once inflated (for the allocation allowance).
    pub inflated_len: u64,
    pub bytes: Vec<u8>,
}

impl Case {
    /// The file name the case is analysed under.
    pub fn file_name(&self) -> String {
        let ext = if self.gzip { "nii.gz" } else { "nii" };
        format!("case-{:09}.{ext}", self.index)
    }
}

/// How a run draws its cases.
#[derive(Debug, Clone)]
pub struct FuzzConfig {
    pub seed: u64,
    /// Zeros a gzip-bomb case inflates to.
    pub bomb_bytes: u64,
    /// Allocation allowed to every case, on top of four bytes per byte of inflated input
    /// (a voxel per byte, as `f32`).
    pub allocation_floor: usize,
}

impl Default for FuzzConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            bomb_bytes: 64 << 20,
            allocation_floor: 64 << 20,
        }
    }
}

/// One of `values`, drawn with `rng` (a macro so the values may draw from `rng` too).
macro_rules! pick {
    ($rng:expr, $values:expr $(,)?) => {{
        let values = $values;
        let at = $rng.random_range(0..values.len());
        values[at]
    }};
}

const HOSTILE_FLOATS: [f64; 16] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    -1.0,
    1.0,
    1e-30,
    1e30,
    -1e30,
    f32::MAX as f64,
    f32::MIN_POSITIVE as f64 / 4.0,
    1e300,
    -2.5,
    0.5,
    2.0,
];

fn hostile_float(rng: &mut ChaCha8Rng) -> f64 {
    if rng.random_bool(0.8) {
        pick!(rng, &HOSTILE_FLOATS)
    } else {
        f64::from_bits(rng.random::<u64>())
    }
}

fn hostile_dim(rng: &mut ChaCha8Rng, width: usize) -> i64 {
    if width == 2 {
        pick!(
            rng,
            &[
                0,
                -1,
                1,
                2,
                3,
                4,
                7,
                8,
                1000,
                2000,
                i64::from(i16::MAX),
                i64::from(i16::MIN),
                i64::from(rng.random::<i16>()),
            ],
        )
    } else {
        pick!(
            rng,
            &[
                0,
                -1,
                1,
                2,
                3,
                7,
                8,
                2000,
                1 << 16,
                (1 << 31) - 1,
                1 << 31,
                1 << 32,
                1 << 40,
                1 << 62,
                i64::MAX,
                i64::MIN,
                rng.random::<i64>(),
            ],
        )
    }
}

/// Reads the header layout of a (well-formed) seed.
fn offsets_of(bytes: &[u8]) -> (Offsets, bool) {
    let le = bytes
        .get(..4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    let be = bytes
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    match (le, be) {
        (348, _) => (NIFTI1, true),
        (_, 348) => (NIFTI1, false),
        (540, _) => (NIFTI2, true),
        _ => (NIFTI2, false),
    }
}

fn vox_offset_of(bytes: &[u8], o: &Offsets, little: bool) -> usize {
    let field = |n: usize| -> Option<Vec<u8>> {
        let mut f = bytes.get(o.vox_offset..o.vox_offset + n)?.to_vec();
        if !little {
            f.reverse();
        }
        Some(f)
    };
    let offset = if o.float_w == 4 {
        field(4).map(|f| f32::from_le_bytes([f[0], f[1], f[2], f[3]]) as f64)
    } else {
        field(8).map(|f| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&f);
            i64::from_le_bytes(a) as f64
        })
    };
    offset
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map_or(o.header_size + 4, |v| v as usize)
}

/// Applies one randomly chosen mutation; returns its description.
fn mutate(rng: &mut ChaCha8Rng, b: &mut Vec<u8>, o: &Offsets, little: bool) -> String {
    let float_w = o.float_w;
    match rng.random_range(0..21) {
        0 => {
            let k = rng.random_range(0..8);
            let v = hostile_dim(rng, o.dim_w);
            put_int(b, o.dim + o.dim_w * k, o.dim_w, v, little);
            format!("dim[{k}]={v}")
        }
        1 => {
            // Products that wrap around 2^64, or fill every dimension.
            let dims: Vec<i64> = if o.dim_w == 8 {
                pick!(
                    rng,
                    &[
                        [3, 1 << 62, 2, 2, 1, 1, 1, 1],
                        [3, 1 << 32, 1 << 32, 2, 1, 1, 1, 1],
                        [4, 2, 2, 2, 1 << 62, 1, 1, 1],
                        [4, 1 << 21, 1 << 21, 1 << 22, 1, 1, 1, 1],
                        [
                            7,
                            1 << 10,
                            1 << 10,
                            1 << 10,
                            1 << 10,
                            1 << 10,
                            1 << 10,
                            1 << 10
                        ],
                    ],
                )
                .to_vec()
            } else {
                pick!(
                    rng,
                    &[
                        [7, 32767, 32767, 32767, 32767, 32767, 32767, 32767],
                        [3, 32767, 32767, 32767, 1, 1, 1, 1],
                        [4, 2, 2, 2, 32767, 1, 1, 1],
                        [4, 2, 2, -2, 32767, 1, 1, 1],
                    ],
                )
                .to_vec()
            };
            for (k, &v) in dims.iter().enumerate() {
                put_int(b, o.dim + o.dim_w * k, o.dim_w, v, little);
            }
            format!("dims={dims:?}")
        }
        2 => {
            // Huge but within caps, data short: nothing may be allocated for it.
            let dims = pick!(
                rng,
                &[
                    [3, 2000, 2000, 2000],
                    [3, 1000, 1000, 1000],
                    [4, 1000, 1000, 100],
                    [3, 1024, 1024, 1023],
                ],
            );
            for (k, &v) in dims.iter().enumerate() {
                put_int(b, o.dim + o.dim_w * k, o.dim_w, v, little);
            }
            put_int(b, o.datatype, 2, 16, little);
            put_int(b, o.bitpix, 2, 32, little);
            format!("huge dims={dims:?} float32")
        }
        3 => {
            let code: i16 = pick!(
                rng,
                &[
                    2,
                    4,
                    8,
                    16,
                    64,
                    256,
                    512,
                    768,
                    1024,
                    1280,
                    0,
                    1,
                    32,
                    128,
                    511,
                    1536,
                    1792,
                    2304,
                    -1,
                    rng.random::<i16>(),
                ],
            );
            put_int(b, o.datatype, 2, i64::from(code), little);
            format!("datatype={code}")
        }
        4 => {
            let bitpix: i16 = pick!(rng, &[0, -8, 1, 7, 8, 16, 32, 64, 128, rng.random()]);
            put_int(b, o.bitpix, 2, i64::from(bitpix), little);
            format!("bitpix={bitpix}")
        }
        5 => {
            let len = b.len() as f64;
            let hs = o.header_size as f64;
            let v = pick!(
                rng,
                &[
                    0.0,
                    1.0,
                    hs - 1.0,
                    hs,
                    hs + 4.0,
                    hs + 5.0,
                    hs + 16.0,
                    len,
                    len + 1.0,
                    1e9,
                    4.6e18,
                    -1.0,
                    f64::NAN,
                    f64::INFINITY,
                    hs + 4.7,
                    1e30,
                ],
            );
            if o.float_w == 4 {
                put_float(b, o.vox_offset, 4, v, little);
            } else {
                let int = if v.is_finite() { v as i64 } else { i64::MIN };
                put_int(b, o.vox_offset, 8, int, little);
            }
            format!("vox_offset={v}")
        }
        6 => {
            let k = rng.random_range(0..8);
            let v = hostile_float(rng);
            put_float(b, o.pixdim + float_w * k, float_w, v, little);
            format!("pixdim[{k}]={v}")
        }
        7 => {
            let (slope, inter) = (hostile_float(rng), hostile_float(rng));
            put_float(b, o.scl_slope, float_w, slope, little);
            if rng.random_bool(0.5) {
                put_float(b, o.scl_inter, float_w, inter, little);
                format!("scl={slope},{inter}")
            } else {
                format!("scl_slope={slope}")
            }
        }
        8 => {
            let field = if rng.random_bool(0.5) {
                o.qform_code
            } else {
                o.sform_code
            };
            let v: i64 = pick!(
                rng,
                &[
                    -1,
                    0,
                    1,
                    2,
                    3,
                    4,
                    5,
                    127,
                    32767,
                    -32768,
                    rng.random::<i16>().into()
                ],
            );
            put_int(b, field, o.code_w, v, little);
            format!(
                "{}_code={v}",
                if field == o.qform_code {
                    "qform"
                } else {
                    "sform"
                }
            )
        }
        9 => {
            let k = rng.random_range(0..6);
            let v = if rng.random_bool(0.3) {
                pick!(rng, &[1.0, std::f64::consts::FRAC_1_SQRT_2, 0.999, 2.0])
            } else {
                hostile_float(rng)
            };
            put_float(b, o.quatern + float_w * k, float_w, v, little);
            put_int(b, o.qform_code, o.code_w, 1, little);
            format!("quatern/qoffset[{k}]={v} qform_code=1")
        }
        10 => {
            put_int(b, o.sform_code, o.code_w, 1, little);
            if rng.random_bool(0.3) {
                let v = pick!(rng, &[0.0, 1e-300, 1e300]);
                for k in 0..12 {
                    put_float(b, o.srow + float_w * k, float_w, v, little);
                }
                format!("srow all={v} sform_code=1")
            } else {
                let k = rng.random_range(0..12);
                let v = hostile_float(rng);
                put_float(b, o.srow + float_w * k, float_w, v, little);
                format!("srow[{k}]={v} sform_code=1")
            }
        }
        11 => {
            let magic: &[u8; 4] = pick!(rng, &[b"ni1\0", b"n+2\0", b"n+1\0", b"\0\0\0\0", b"n+1 "]);
            if let Some(dst) = b.get_mut(o.magic..o.magic + 4) {
                dst.copy_from_slice(magic);
            }
            format!("magic={:?}", String::from_utf8_lossy(magic))
        }
        12 => {
            let v: i64 = pick!(
                rng,
                &[
                    348,
                    540,
                    0,
                    -1,
                    349,
                    539,
                    1 << 24,
                    rng.random::<i32>().into()
                ]
            );
            put_int(b, 0, 4, v, little);
            format!("sizeof_hdr={v}")
        }
        13 => {
            // The header is then read in the other byte order.
            if b.len() >= 4 {
                b[..4].reverse();
            }
            "sizeof_hdr byte order swapped".to_string()
        }
        14 => {
            let at = o.header_size;
            let esize: i64 = pick!(
                rng,
                &[0, 8, 16, -16, 1 << 30, i64::from(rng.random::<i32>())]
            );
            if let Some(ext) = b.get_mut(at..at + 4) {
                ext[0] = pick!(rng, &[1u8, 0, 255]);
            }
            put_int(b, at + 4, 4, esize, little);
            put_int(b, at + 8, 4, i64::from(rng.random::<i32>()), little);
            format!("extension flag, esize={esize}")
        }
        15 => {
            let vox = vox_offset_of(b, o, little);
            let len = b.len();
            let at = pick!(
                rng,
                &[
                    0,
                    1,
                    3,
                    4,
                    o.header_size - 1,
                    o.header_size,
                    vox.saturating_sub(1),
                    vox,
                    rng.random_range(0..=len),
                    len.saturating_sub(1),
                ],
            )
            .min(len);
            b.truncate(at);
            format!("truncated to {at}")
        }
        16 => {
            let flips = rng.random_range(1..=8);
            let header_only = rng.random_bool(0.8);
            for _ in 0..flips {
                let end = if header_only {
                    b.len().min(o.header_size + 4)
                } else {
                    b.len()
                };
                if end > 0 {
                    let at = rng.random_range(0..end);
                    b[at] ^= 1 << rng.random_range(0..8);
                }
            }
            format!(
                "{flips} bit flips{}",
                if header_only { " in the header" } else { "" }
            )
        }
        17 => {
            let text: &[u8] = pick!(
                rng,
                &[
                    b"ab\0cd\0ef" as &[u8],
                    b"\xff\xfe\xfd invalid utf-8 \xc3" as &[u8],
                    b"\x01\x02\x1b[31mred\x07" as &[u8],
                    b"'); drop table images; --" as &[u8],
                ],
            );
            if let Some(dst) = b.get_mut(o.descrip..o.descrip + text.len()) {
                dst.copy_from_slice(text);
            }
            "descrip with NUL / invalid UTF-8 / control bytes".to_string()
        }
        18 => {
            let units = rng.random::<u8>();
            put_int(b, o.xyzt_units, o.xyzt_w, i64::from(units), little);
            let intent = rng.random::<i16>();
            put_int(b, o.intent_code, o.intent_w, i64::from(intent), little);
            format!("xyzt_units={units} intent_code={intent}")
        }
        19 => {
            let vox = vox_offset_of(b, o, little).min(b.len());
            let fill = rng.random_range(0..3);
            for (i, v) in b[vox..].iter_mut().enumerate() {
                *v = match fill {
                    0 => 0xff,
                    // f32 / f64 NaN and infinity patterns, whatever the width.
                    1 => [0x7f, 0xc0, 0x00, 0x00][i % 4],
                    _ => [0x7f, 0xf0, 0, 0, 0, 0, 0, 0][i % 8],
                };
            }
            format!("voxel data filled with pattern {fill}")
        }
        _ => {
            let n = rng.random_range(1..4096);
            let start = b.len();
            b.resize(start + n, 0);
            rng.fill(&mut b[start..]);
            format!("{n} trailing bytes")
        }
    }
}

/// Builds case `index` of a run: deterministic in (`config.seed`, `index`).
pub fn make_case(config: &FuzzConfig, seeds: &[Seed], index: u64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(index);
    let seed = &seeds[rng.random_range(0..seeds.len())];
    let mut bytes = seed.bytes.clone();
    let (o, little) = offsets_of(&bytes);
    let mut mutations = Vec::new();
    // One case in twenty stays intact: the seeds themselves must import.
    if rng.random_range(0..20) != 0 {
        for _ in 0..rng.random_range(1..=4) {
            mutations.push(mutate(&mut rng, &mut bytes, &o, little));
        }
    }
    let mut inflated_len = bytes.len() as u64;
    let framing = rng.random_range(0..100);
    let (gzip_framed, bytes) = match framing {
        0..=49 => (false, bytes),
        50..=84 => (true, gzip(&bytes)),
        85..=89 => {
            mutations.push("gzip in two members".into());
            let cut = rng.random_range(0..=bytes.len());
            let mut two = gzip(&bytes[..cut]);
            two.extend(gzip(&bytes[cut..]));
            (true, two)
        }
        90..=96 => {
            let mut z = gzip(&bytes);
            let how = rng.random_range(0..3);
            match how {
                0 => {
                    let at = rng.random_range(10..z.len().max(11)).min(z.len() - 1);
                    z[at] ^= 1 << rng.random_range(0..8);
                }
                1 => {
                    let at = rng.random_range(2..z.len());
                    z.truncate(at);
                }
                _ => {
                    let n = z.len();
                    z[n - 8] ^= 0x55;
                }
            }
            mutations.push(format!("corrupt gzip framing ({how})"));
            (true, z)
        }
        _ => {
            mutations.push(format!("gzip bomb: +{} zero bytes", config.bomb_bytes));
            inflated_len += config.bomb_bytes.div_ceil(1 << 20) << 20;
            (true, gzip_bomb(&bytes, config.bomb_bytes))
        }
    };
    Case {
        index,
        seed_name: seed.name.clone(),
        mutations,
        gzip: gzip_framed,
        inflated_len,
        bytes,
    }
}

// ---------------------------------------------------------------------------------
// Running cases

/// What went wrong in one case.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub index: u64,
    pub seed_name: String,
    pub mutations: Vec<String>,
    /// Which reader: "header", "analysis", "viewer", "preprocess".
    pub stage: String,
    pub problem: String,
}

/// How one case ended when nothing went wrong.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// "ok" or the first words of the failure reason.
    pub verdict: String,
    /// The store write the import would make (to check the store takes it).
    pub write: Option<ImageWrite>,
}

/// The kind of a failure reason, for the summary: the text before the first number,
/// quote or parenthesis, without the file name.
fn reason_kind(reason: &str) -> String {
    // Past the first few characters, so "a 2D image" keeps its number.
    let cut = reason
        .char_indices()
        .find(|&(i, c)| i >= 6 && (c.is_ascii_digit() || "\"([-".contains(c)))
        .map_or(reason.len(), |(i, _)| i);
    let kind = reason[..cut].trim_end_matches([' ', ':', '=']).trim();
    kind.chars().take(60).collect()
}

fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| format!("panic: {}", analyse::panic_message(payload.as_ref())))
}

/// Runs one case through every reader. `root` stands for the warehouse folder (no
/// sidecars are expected there).
pub fn run_case(config: &FuzzConfig, case: &Case, root: &Path) -> Result<CaseResult, Finding> {
    let path = root.join(case.file_name());
    let finding = |stage: &str, problem: String| Finding {
        index: case.index,
        seed_name: case.seed_name.clone(),
        mutations: case.mutations.clone(),
        stage: stage.to_string(),
        problem,
    };
    let allowance = config
        .allocation_floor
        .saturating_add((case.inflated_len as usize).saturating_mul(4));
    let check_allocation = |stage: &str| {
        let largest = largest_allocation();
        if largest > allowance {
            Err(finding(
                stage,
                format!("allocated {largest} bytes at once (allowed {allowance})"),
            ))
        } else {
            Ok(())
        }
    };

    // `cdwqc inspect`: header bytes only.
    reset_largest_allocation();
    let header = caught(|| {
        nifti::read_header(&path, case.bytes.as_slice()).map(|h| {
            // What inspect shows of a header.
            let shape = h.dim[1..=h.dim[0] as usize].to_vec();
            let (affine, _) = crate::imaging::orientation::best_affine(&h);
            let codes = crate::imaging::orientation::axis_codes(&affine);
            (shape, codes, h.voxel_size_mm())
        })
    })
    .map_err(|p| finding("header", p))?;
    check_allocation("header")?;
    drop(header);

    // `cdwqc import`: the per-file analysis, unguarded so panics are seen.
    reset_largest_allocation();
    let outcome = caught(|| analyse::analyse_bytes_unguarded(&path, root, &case.bytes, None))
        .map_err(|p| finding("analysis", p))?;
    check_allocation("analysis")?;
    let (verdict, write) = match outcome {
        Outcome::Imported { write, .. } => {
            if let ImageWrite::Upsert { row, previews, .. } = &write {
                let facts = row
                    .header
                    .as_ref()
                    .ok_or_else(|| finding("analysis", "imported without header facts".into()))?;
                if facts.dims.iter().any(|&d| d < 2 || d > i64::from(i32::MAX)) {
                    return Err(finding(
                        "analysis",
                        format!("dims {:?} do not fit the store", facts.dims),
                    ));
                }
                if previews.len() != 3 || previews.iter().any(|p| p.png.is_empty()) {
                    return Err(finding(
                        "analysis",
                        "imported without three previews".into(),
                    ));
                }
            }
            ("ok".to_string(), Some(write))
        }
        Outcome::Failed { write, reason } => {
            if reason.is_empty() || reason.contains('\n') {
                return Err(finding(
                    "analysis",
                    format!("reason is not one line: {reason:?}"),
                ));
            }
            (reason_kind(&reason), Some(write))
        }
        Outcome::Unchanged { .. } => {
            return Err(finding("analysis", "unchanged without a known file".into()));
        }
    };

    if verdict == "ok" {
        // The viewer and model preprocessing load the same bytes on their own.
        reset_largest_allocation();
        let volume =
            caught(|| nifti::decode_file_bytes(&path, &case.bytes).map(Volume::from_decoded))
                .map_err(|p| finding("viewer", p))?
                .map_err(|e| finding("viewer", format!("imported, but loading fails: {e}")))?;
        caught(|| {
            let window = preview::display_window(&volume.data);
            let ras_dims = RasView::from_affine(&volume.affine).dims(volume.dims);
            for plane in Plane::ALL {
                for index in [Some(0), None, Some(ras_dims[2] + 5), Some(usize::MAX)] {
                    preview::slice(
                        volume.dims,
                        &volume.data,
                        &volume.affine,
                        volume.voxel_size,
                        plane,
                        index,
                        window,
                    );
                }
            }
        })
        .map_err(|p| finding("viewer", p))?;
        check_allocation("viewer")?;
        reset_largest_allocation();
        let spec = PreprocessSpec::grid([6, 5, 4], 2.0);
        let values = caught(|| preprocess(&volume, &spec)).map_err(|p| finding("preprocess", p))?;
        if let Ok(values) = values
            && values.iter().any(|v| !(0.0..=1.0).contains(v))
        {
            return Err(finding(
                "preprocess",
                "preprocessed values outside [0, 1]".into(),
            ));
        }
        check_allocation("preprocess")?;
    }
    Ok(CaseResult { verdict, write })
}

/// Counts of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FuzzSummary {
    pub seed: u64,
    pub cases: u64,
    pub imported: u64,
    pub failed: u64,
    /// Failure reasons by kind.
    pub reasons: BTreeMap<String, u64>,
    pub findings: Vec<Finding>,
}

impl FuzzSummary {
    pub fn merge(&mut self, other: FuzzSummary) {
        self.cases += other.cases;
        self.imported += other.imported;
        self.failed += other.failed;
        for (k, v) in other.reasons {
            *self.reasons.entry(k).or_default() += v;
        }
        self.findings.extend(other.findings);
    }

    fn add(&mut self, result: Result<CaseResult, Finding>) -> Option<ImageWrite> {
        self.cases += 1;
        match result {
            Ok(CaseResult { verdict, write }) => {
                if verdict == "ok" {
                    self.imported += 1;
                } else {
                    self.failed += 1;
                    *self.reasons.entry(verdict).or_default() += 1;
                }
                write
            }
            Err(finding) => {
                self.findings.push(finding);
                None
            }
        }
    }
}

/// Runs cases `range` of a run on this thread; `sink` receives the store writes the
/// import would make, case by case.
pub fn run_range(
    config: &FuzzConfig,
    seeds: &[Seed],
    root: &Path,
    range: std::ops::Range<u64>,
    mut sink: impl FnMut(u64, ImageWrite),
) -> FuzzSummary {
    let mut summary = FuzzSummary {
        seed: config.seed,
        ..FuzzSummary::default()
    };
    for index in range {
        let case = make_case(config, seeds, index);
        if let Some(write) = summary.add(run_case(config, &case, root)) {
            sink(index, write);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_seeds_decode() {
        for seed in builtin_seeds() {
            let decoded = nifti::decode(Path::new(&seed.name), &seed.bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", seed.name));
            assert!(!decoded.data.is_empty(), "{}", seed.name);
        }
    }

    #[test]
    fn cases_are_deterministic() {
        let seeds = builtin_seeds();
        let config = FuzzConfig::default();
        for index in [0, 1, 77, 12_345] {
            let a = make_case(&config, &seeds, index);
            let b = make_case(&config, &seeds, index);
            assert_eq!(a.bytes, b.bytes);
            assert_eq!(a.mutations, b.mutations);
        }
    }

    #[test]
    fn a_gzip_bomb_is_valid_gzip_of_the_promised_size() {
        use std::io::Read;
        let bomb = gzip_bomb(b"head", 3 << 20);
        assert!(bomb.len() < 16 << 10, "{} bytes", bomb.len());
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(bomb.as_slice())
            .read_to_end(&mut inflated)
            .expect("a valid gzip stream, CRC and size included");
        assert_eq!(inflated.len(), 4 + (3 << 20));
        assert_eq!(&inflated[..4], b"head");
        assert!(inflated[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn reason_kinds_drop_numbers() {
        assert_eq!(reason_kind("a 2D image (shape 4x4)"), "a 2D image");
        assert_eq!(
            reason_kind("invalid NIfTI header: dim[2] = -4 is not a positive size"),
            "invalid NIfTI header: dim"
        );
        assert_eq!(
            reason_kind("truncated: voxel data needs 5 bytes"),
            "truncated: voxel data needs"
        );
    }
}
