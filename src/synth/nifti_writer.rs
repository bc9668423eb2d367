//! NIfTI-1 single-file (.nii.gz) writing for synthetic images: header, orientation fields, quantisation.

use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::SynthError;

/// On-disk voxel type of a written image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredType {
    Int16,
    Uint16,
    Float32,
}

impl StoredType {
    pub fn nifti_code(self) -> i16 {
        match self {
            StoredType::Int16 => 4,
            StoredType::Uint16 => 512,
            StoredType::Float32 => 16,
        }
    }

    pub fn bits(self) -> i16 {
        match self {
            StoredType::Int16 | StoredType::Uint16 => 16,
            StoredType::Float32 => 32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoredType::Int16 => "int16",
            StoredType::Uint16 => "uint16",
            StoredType::Float32 => "float32",
        }
    }
}

/// Everything the header needs besides the voxel values.
pub struct NiftiImage<'a> {
    pub dims: [usize; 3],
    /// Scaled intensities, i fastest.
    pub data: &'a [f32],
    /// Voxel -> world RAS+ mm; written as both sform and qform.
    pub affine: [[f64; 4]; 4],
    pub stored: StoredType,
    /// Stored value = (intensity - scl_inter) / scl_slope; integer types round and clamp.
    pub scl_slope: f32,
    pub scl_inter: f32,
    pub intent_code: i16,
    pub description: &'a str,
}

pub const HEADER_BYTES: usize = 348;
const VOX_OFFSET: usize = 352;

/// Column lengths of the affine's 3x3 part, i.e. the voxel sizes.
pub fn voxel_sizes(affine: &[[f64; 4]; 4]) -> [f64; 3] {
    [0, 1, 2].map(|c| {
        (0..3)
            .map(|r| affine[r][c] * affine[r][c])
            .sum::<f64>()
            .sqrt()
    })
}

/// NIfTI quaternion (b, c, d) and qfac for the rotation part of an affine (nifti_mat44_to_quatern).
pub fn affine_to_quaternion(affine: &[[f64; 4]; 4]) -> ([f64; 3], f64) {
    let sizes = voxel_sizes(affine);
    let mut r = [[0.0f64; 3]; 3];
    for row in 0..3 {
        for col in 0..3 {
            r[row][col] = affine[row][col] / sizes[col].max(1e-12);
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    if qfac < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let a;
    let (mut b, mut c, mut d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r[2][1] - r[1][2]) / a;
        c = 0.25 * (r[0][2] - r[2][0]) / a;
        d = 0.25 * (r[1][0] - r[0][1]) / a;
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r[0][1] + r[1][0]) / b;
            d = 0.25 * (r[0][2] + r[2][0]) / b;
            a = 0.25 * (r[2][1] - r[1][2]) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r[0][1] + r[1][0]) / c;
            d = 0.25 * (r[1][2] + r[2][1]) / c;
            a = 0.25 * (r[0][2] - r[2][0]) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r[0][2] + r[2][0]) / d;
            c = 0.25 * (r[1][2] + r[2][1]) / d;
            a = 0.25 * (r[1][0] - r[0][1]) / d;
        }
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
        }
    }
    ([b, c, d], qfac)
}

fn put_i16(h: &mut [u8], at: usize, v: i16) {
    h[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_i32(h: &mut [u8], at: usize, v: i32) {
    h[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_f32(h: &mut [u8], at: usize, v: f32) {
    h[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The 348-byte little-endian NIfTI-1 header.
pub fn header_bytes(image: &NiftiImage<'_>) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    put_i32(&mut h, 0, HEADER_BYTES as i32);
    h[38] = b'r';
    let dims = image.dims;
    put_i16(&mut h, 40, 3);
    for (a, &d) in dims.iter().enumerate() {
        put_i16(&mut h, 42 + 2 * a, d.min(i16::MAX as usize) as i16);
    }
    for a in 3..7 {
        put_i16(&mut h, 42 + 2 * a, 1);
    }
    put_i16(&mut h, 68, image.intent_code);
    put_i16(&mut h, 70, image.stored.nifti_code());
    put_i16(&mut h, 72, image.stored.bits());
    let (quaternion, qfac) = affine_to_quaternion(&image.affine);
    let sizes = voxel_sizes(&image.affine);
    put_f32(&mut h, 76, qfac as f32);
    for (a, &s) in sizes.iter().enumerate() {
        put_f32(&mut h, 80 + 4 * a, s as f32);
    }
    put_f32(&mut h, 92, 1.0);
    put_f32(&mut h, 108, VOX_OFFSET as f32);
    put_f32(&mut h, 112, image.scl_slope);
    put_f32(&mut h, 116, image.scl_inter);
    // Spatial unit mm (2) and temporal unit s (8).
    h[123] = 2 | 8;
    let description = image.description.as_bytes();
    let n = description.len().min(79);
    h[148..148 + n].copy_from_slice(&description[..n]);
    put_i16(&mut h, 252, 1);
    put_i16(&mut h, 254, 1);
    for (q, &v) in quaternion.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * q, v as f32);
    }
    for row in 0..3 {
        put_f32(&mut h, 268 + 4 * row, image.affine[row][3] as f32);
        for col in 0..4 {
            put_f32(
                &mut h,
                280 + 16 * row + 4 * col,
                image.affine[row][col] as f32,
            );
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

/// Stored voxel bytes after inverse scaling and quantisation.
pub fn voxel_bytes(image: &NiftiImage<'_>) -> Vec<u8> {
    let slope = if image.scl_slope == 0.0 {
        1.0
    } else {
        image.scl_slope
    };
    let inter = image.scl_inter;
    let width = (image.stored.bits() / 8) as usize;
    let mut bytes = Vec::with_capacity(image.data.len() * width);
    for &v in image.data {
        let stored = (v - inter) / slope;
        match image.stored {
            StoredType::Int16 => {
                let q = stored.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16;
                bytes.extend_from_slice(&q.to_le_bytes());
            }
            StoredType::Uint16 => {
                let q = stored.round().clamp(0.0, u16::MAX as f32) as u16;
                bytes.extend_from_slice(&q.to_le_bytes());
            }
            StoredType::Float32 => bytes.extend_from_slice(&stored.to_le_bytes()),
        }
    }
    bytes
}

/// Writes a gzip-compressed single-file NIfTI-1 image (header, empty extender, voxels).
pub fn write_nifti_gz(path: &Path, image: &NiftiImage<'_>) -> Result<(), SynthError> {
    let expected = image.dims.iter().product::<usize>();
    if image.data.len() != expected {
        return Err(SynthError::Invalid(format!(
            "{}: {} voxel values for dimensions {}",
            path.display(),
            image.data.len(),
            crate::display::shape(&image.dims)
        )));
    }
    // Replaced whole: a link planted under the name (in a folder of masks or a
    // warehouse being written) is never written through.
    crate::replace::replace_with(path, crate::replace::Durability::None, |temp, file| {
        let io = |e: std::io::Error| SynthError::Io {
            path: temp.to_path_buf(),
            source: e,
        };
        let mut encoder = GzEncoder::new(BufWriter::new(file), Compression::new(4));
        encoder.write_all(&header_bytes(image)).map_err(io)?;
        encoder.write_all(&[0u8; 4]).map_err(io)?;
        encoder.write_all(&voxel_bytes(image)).map_err(io)?;
        encoder.finish().map_err(io)?.flush().map_err(io)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quaternion_of_identity_and_flip() {
        let identity = [
            [2.0, 0.0, 0.0, 1.0],
            [0.0, 2.0, 0.0, 2.0],
            [0.0, 0.0, 2.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let (q, qfac) = affine_to_quaternion(&identity);
        assert!(q.iter().all(|v| v.abs() < 1e-9));
        assert_eq!(qfac, 1.0);
        let las = [
            [-2.0, 0.0, 0.0, 1.0],
            [0.0, 2.0, 0.0, 2.0],
            [0.0, 0.0, 2.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let (q, qfac) = affine_to_quaternion(&las);
        assert_eq!(qfac, -1.0);
        // x flipped with qfac -1 is a 180 degree rotation about y... or z; either way |q| = 1.
        assert!((q.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn header_layout_fields() {
        let data = vec![0.0f32; 24];
        let affine = [
            [1.5, 0.0, 0.0, -10.0],
            [0.0, 1.5, 0.0, -20.0],
            [0.0, 0.0, 4.0, -30.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let image = NiftiImage {
            dims: [2, 3, 4],
            data: &data,
            affine,
            stored: StoredType::Uint16,
            scl_slope: 0.5,
            scl_inter: 0.0,
            intent_code: 0,
            description: "test",
        };
        let h = header_bytes(&image);
        assert_eq!(i32::from_le_bytes([h[0], h[1], h[2], h[3]]), 348);
        assert_eq!(&h[344..348], b"n+1\0");
        assert_eq!(i16::from_le_bytes([h[70], h[71]]), 512);
        assert_eq!(i16::from_le_bytes([h[46], h[47]]), 4);
        assert_eq!(f32::from_le_bytes([h[88], h[89], h[90], h[91]]), 4.0);
        assert_eq!(f32::from_le_bytes([h[108], h[109], h[110], h[111]]), 352.0);
    }
}
