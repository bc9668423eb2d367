//! Voxel-to-world affines from the sform/qform, axis codes (RAS, LAS...) and the axis
//! permutation that shows an image in RAS orientation without resampling.

use super::nifti::Header;

pub type Affine = [[f64; 4]; 4];

/// Which header field the affine came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    Sform,
    Qform,
    /// Neither code set: voxel sizes only.
    Pixdim,
}

impl AffineSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sform => "sform",
            Self::Qform => "qform",
            Self::Pixdim => "pixdim",
        }
    }
}

/// The voxel (i, j, k, 1) -> world millimetre affine the way NIfTI readers choose it:
/// the sform when `sform_code > 0`, else the qform when `qform_code > 0`, else the
/// voxel sizes on the diagonal.
pub fn best_affine(h: &Header) -> (Affine, AffineSource) {
    if h.sform_code > 0 && h.srow.iter().flatten().all(|v| v.is_finite()) {
        let mut a = identity();
        a[..3].copy_from_slice(&h.srow);
        return (a, AffineSource::Sform);
    }
    if h.qform_code > 0
        && let Some(a) = qform_affine(h)
    {
        return (a, AffineSource::Qform);
    }
    let mut a = identity();
    for (i, row) in a.iter_mut().take(3).enumerate() {
        let size = h.pixdim[i + 1].abs();
        row[i] = if size > 0.0 && size.is_finite() {
            size
        } else {
            1.0
        };
    }
    (a, AffineSource::Pixdim)
}

fn identity() -> Affine {
    let mut a = [[0.0; 4]; 4];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    a
}

/// The qform affine (NIfTI-1 standard, method 2): rotation from the quaternion,
/// voxel sizes, `qfac` from `pixdim[0]`.
pub fn qform_affine(h: &Header) -> Option<Affine> {
    let [b, c, d] = h.quatern;
    let sum = b * b + c * c + d * d;
    if !sum.is_finite() {
        return None;
    }
    // Rounding can push the sum just above one; the standard clamps a to zero then.
    let a = if sum > 1.0 { 0.0 } else { (1.0 - sum).sqrt() };
    let rot = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let zooms = [
        h.pixdim[1].abs(),
        h.pixdim[2].abs(),
        h.pixdim[3].abs() * qfac,
    ];
    let mut out = identity();
    for r in 0..3 {
        for col in 0..3 {
            out[r][col] = rot[r][col] * zooms[col];
        }
        out[r][3] = h.qoffset[r];
    }
    if out.iter().flatten().all(|v| v.is_finite()) {
        Some(out)
    } else {
        None
    }
}

/// For each voxel axis, the world axis it runs along (0 = x, 1 = y, 2 = z) and whether
/// it runs towards the positive end (R, A, S). Assigned greedily from the strongest
/// direction cosine, as nibabel's `io_orientation` does for non-degenerate affines.
pub fn axis_mapping(affine: &Affine) -> [(usize, bool); 3] {
    let mut cos = [[0.0f64; 3]; 3]; // [world][voxel]
    for v in 0..3 {
        let norm = (0..3)
            .map(|w| affine[w][v] * affine[w][v])
            .sum::<f64>()
            .sqrt();
        for (w, row) in cos.iter_mut().enumerate() {
            row[v] = if norm > 0.0 { affine[w][v] / norm } else { 0.0 };
        }
    }
    let mut mapping = [(0usize, true); 3];
    let mut used_world = [false; 3];
    let mut used_voxel = [false; 3];
    for _ in 0..3 {
        let mut best = (0, 0, -1.0);
        for (w, row) in cos.iter().enumerate() {
            for (v, c) in row.iter().enumerate() {
                if !used_world[w] && !used_voxel[v] && c.abs() > best.2 {
                    best = (w, v, c.abs());
                }
            }
        }
        let (w, v, _) = best;
        used_world[w] = true;
        used_voxel[v] = true;
        mapping[v] = (w, cos[w][v] >= 0.0);
    }
    mapping
}

/// Axis codes such as "RAS" or "LPI": the world direction each voxel axis points to.
pub fn axis_codes(affine: &Affine) -> String {
    const POS: [char; 3] = ['R', 'A', 'S'];
    const NEG: [char; 3] = ['L', 'P', 'I'];
    axis_mapping(affine)
        .iter()
        .map(|&(w, positive)| if positive { POS[w] } else { NEG[w] })
        .collect()
}

/// How to read a volume as if it were stored in RAS order: for each output axis
/// (R, A, S), the source voxel axis and whether to flip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RasView {
    pub source_axis: [usize; 3],
    pub flip: [bool; 3],
}

impl RasView {
    pub fn from_affine(affine: &Affine) -> Self {
        let mapping = axis_mapping(affine);
        let mut source_axis = [0; 3];
        let mut flip = [false; 3];
        for (v, &(w, positive)) in mapping.iter().enumerate() {
            source_axis[w] = v;
            flip[w] = !positive;
        }
        Self { source_axis, flip }
    }

    /// Output (RAS) dimensions for source dimensions.
    pub fn dims(&self, source: [usize; 3]) -> [usize; 3] {
        self.source_axis.map(|a| source[a])
    }

    /// Source voxel index for an RAS-ordered index.
    pub fn source_index(&self, source_dims: [usize; 3], ras: [usize; 3]) -> [usize; 3] {
        let mut src = [0; 3];
        for (out, &at) in ras.iter().enumerate() {
            let axis = self.source_axis[out];
            src[axis] = if self.flip[out] {
                source_dims[axis] - 1 - at
            } else {
                at
            };
        }
        src
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(x: f64, y: f64, z: f64) -> Affine {
        [
            [x, 0.0, 0.0, 0.0],
            [0.0, y, 0.0, 0.0],
            [0.0, 0.0, z, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    #[test]
    fn axis_codes_of_simple_affines() {
        assert_eq!(axis_codes(&diag(1.0, 1.0, 1.0)), "RAS");
        assert_eq!(axis_codes(&diag(-1.0, 1.0, 1.0)), "LAS");
        assert_eq!(axis_codes(&diag(-1.0, -1.0, 1.0)), "LPS");
        // Sagittal acquisition: i runs A->P, j runs S->I, k runs L->R.
        let sag = [
            [0.0, 0.0, 1.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(axis_codes(&sag), "PIR");
    }

    #[test]
    fn ras_view_undoes_flips_and_permutations() {
        let sag = [
            [0.0, 0.0, 1.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let view = RasView::from_affine(&sag);
        let src_dims = [10, 20, 30];
        assert_eq!(view.dims(src_dims), [30, 10, 20]);
        // RAS origin corner (most left, posterior, inferior) is i = 9, j = 19, k = 0.
        assert_eq!(view.source_index(src_dims, [0, 0, 0]), [9, 19, 0]);
    }
}
