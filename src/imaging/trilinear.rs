//! Trilinear interpolation of a volume at continuous voxel coordinates, a line of points
//! at a time, four points per AVX2 step where the CPU has it, with the same bits as the
//! one-point form.

/// A volume's voxels as interpolation reads them: `data[i + sx * (j + sy * k)]`, with
/// `fill` for voxels outside it and for non-finite ones.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub data: &'a [f32],
    pub dims: [usize; 3],
    pub fill: f32,
}

impl Source<'_> {
    fn sample(&self, i: isize, j: isize, k: isize) -> f32 {
        let [sx, sy, sz] = self.dims;
        if i < 0 || j < 0 || k < 0 || i >= sx as isize || j >= sy as isize || k >= sz as isize {
            return self.fill;
        }
        self.finite_or_fill(self.data[i as usize + sx * (j as usize + sy * k as usize)])
    }

    fn finite_or_fill(&self, value: f32) -> f32 {
        if value.is_finite() { value } else { self.fill }
    }

    /// The value at voxel coordinates `v`: `fill` more than one voxel outside, else the
    /// sum over the eight neighbours, in the order (i, j, k) = 000, 001, 010, ..., 111,
    /// of `w_i * w_j * w_k * value` in f64, terms of zero weight left out.
    pub fn at(&self, v: [f64; 3]) -> f32 {
        let [sx, sy, sz] = self.dims;
        if v[0] < -1.0
            || v[1] < -1.0
            || v[2] < -1.0
            || v[0] > sx as f64
            || v[1] > sy as f64
            || v[2] > sz as f64
        {
            return self.fill;
        }
        let (row, slice) = (sx, sx * sy);
        let base = [floor(v[0]), floor(v[1]), floor(v[2])];
        let frac = [v[0] - base[0], v[1] - base[1], v[2] - base[2]];
        let (i0, j0, k0) = (base[0] as isize, base[1] as isize, base[2] as isize);
        let (w0, w1) = ([1.0 - frac[0], 1.0 - frac[1], 1.0 - frac[2]], frac);
        let neighbours: [f32; 8] = if i0 >= 0
            && j0 >= 0
            && k0 >= 0
            && i0 + 1 < sx as isize
            && j0 + 1 < sy as isize
            && k0 + 1 < sz as isize
        {
            // Inside: one index, no bounds to test per neighbour.
            let at = i0 as usize + row * j0 as usize + slice * k0 as usize;
            let cell = &self.data[at..=at + 1 + row + slice];
            [
                cell[0],
                cell[slice],
                cell[row],
                cell[row + slice],
                cell[1],
                cell[1 + slice],
                cell[1 + row],
                cell[1 + row + slice],
            ]
            .map(|value| self.finite_or_fill(value))
        } else {
            let mut n = [self.fill; 8];
            for (slot, value) in n.iter_mut().enumerate() {
                let (di, dj, dk) = (
                    (slot >> 2) as isize,
                    ((slot >> 1) & 1) as isize,
                    (slot & 1) as isize,
                );
                *value = self.sample(i0 + di, j0 + dj, k0 + dk);
            }
            n
        };
        let mut acc = 0.0f64;
        for (slot, &value) in neighbours.iter().enumerate() {
            let pick = |axis: usize, bit: usize| if bit == 0 { w0[axis] } else { w1[axis] };
            let weight = pick(0, slot >> 2) * pick(1, (slot >> 1) & 1) * pick(2, slot & 1);
            // A zero weight adds nothing (not even a NaN fill); adding +0.0 leaves the
            // sum's bits as they are, as skipping the term did.
            acc += if weight > 0.0 {
                weight * value as f64
            } else {
                0.0
            };
        }
        acc as f32
    }

    /// [`Source::at`] for every point of `points`, into `values` (as long).
    pub fn line(&self, points: &[[f64; 3]], values: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() && avx2::indexable(self) {
            // SAFETY: the CPU has AVX2 (checked at run time).
            unsafe { avx2::line(self, points, values) };
            return;
        }
        self.line_one_by_one(points, values);
    }

    fn line_one_by_one(&self, points: &[[f64; 3]], values: &mut [f32]) {
        for (v, value) in points.iter().zip(values.iter_mut()) {
            *value = self.at(*v);
        }
    }
}

/// `value.floor()` for coordinates well inside the range of i64, inline: without SSE4.1
/// in the target, `f64::floor` is a call into libm. A zero keeps its sign only where it
/// is not floored to zero; the weights and indices computed from it are the same either
/// way.
#[inline]
pub(crate) fn floor(value: f64) -> f64 {
    let truncated = value as i64 as f64;
    if truncated > value {
        truncated - 1.0
    } else {
        truncated
    }
}

/// Four points per step: the floor, the weights, the cell's index and the eight
/// neighbours (gathered) in 256-bit lanes, each lane doing the one-point form's IEEE
/// operations in its order (no fused multiply-add), so the values are the same bits.
/// A step whose four cells are not all wholly inside the volume takes the one-point form.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Source;
    use std::arch::x86_64::*;

    /// Whether the lanes may read `source`: its voxels are its dimensions' product (the
    /// bound the lanes' cells are tested against), at least two along each axis, and
    /// every index fits the gathers' signed 32-bit offsets.
    pub(super) fn indexable(source: &Source) -> bool {
        let [sx, sy, sz] = source.dims;
        let voxels = sx.checked_mul(sy).and_then(|n| n.checked_mul(sz));
        voxels == Some(source.data.len())
            && source.data.len() < i32::MAX as usize
            && source.dims.iter().all(|&d| d >= 2)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn line(source: &Source, points: &[[f64; 3]], values: &mut [f32]) {
        let [sx, sy, sz] = source.dims;
        let (row, slice) = (sx as i32, (sx * sy) as i32);
        let offsets = [
            0,
            slice,
            row,
            row + slice,
            1,
            1 + slice,
            1 + row,
            1 + row + slice,
        ];
        // The last index a cell's first voxel may have along each axis.
        let last = [sx, sy, sz].map(|d| _mm256_set1_pd((d - 2) as f64));
        let zero = _mm256_setzero_pd();
        let one = _mm256_set1_pd(1.0);
        let fill = _mm_set1_ps(source.fill);
        let exponent = _mm_set1_epi32(0x7f80_0000);
        let magnitude = _mm_set1_epi32(0x7fff_ffff);
        let fours = points.chunks_exact(4);
        let rest = fours.len() * 4;
        for (four, out) in fours.zip(values.chunks_exact_mut(4)) {
            let axis = |a: usize| _mm256_setr_pd(four[0][a], four[1][a], four[2][a], four[3][a]);
            let v = [axis(0), axis(1), axis(2)];
            let mut inside = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
            let mut base = [zero; 3];
            let mut index = [_mm_setzero_si128(); 3];
            for a in 0..3 {
                // The one-point floor: truncate, step down where that went up.
                let truncated = _mm256_cvtepi32_pd(_mm256_cvttpd_epi32(v[a]));
                let up = _mm256_cmp_pd::<_CMP_GT_OQ>(truncated, v[a]);
                base[a] = _mm256_sub_pd(truncated, _mm256_and_pd(up, one));
                inside = _mm256_and_pd(
                    inside,
                    _mm256_and_pd(
                        _mm256_cmp_pd::<_CMP_GE_OQ>(base[a], zero),
                        _mm256_cmp_pd::<_CMP_LE_OQ>(base[a], last[a]),
                    ),
                );
                index[a] = _mm256_cvttpd_epi32(base[a]);
            }
            if _mm256_movemask_pd(inside) != 0b1111 {
                source.line_one_by_one(four, out);
                continue;
            }
            let frac = [0, 1, 2].map(|a| _mm256_sub_pd(v[a], base[a]));
            let w0 = frac.map(|f| _mm256_sub_pd(one, f));
            let at = _mm_add_epi32(
                index[0],
                _mm_add_epi32(
                    _mm_mullo_epi32(_mm_set1_epi32(row), index[1]),
                    _mm_mullo_epi32(_mm_set1_epi32(slice), index[2]),
                ),
            );
            let mut acc = zero;
            for (slot, &offset) in offsets.iter().enumerate() {
                // SAFETY: every lane's cell lies inside the volume (tested above), and
                // `indexable` keeps its indices within i32.
                let gathered = unsafe {
                    _mm_i32gather_ps::<4>(
                        source.data.as_ptr(),
                        _mm_add_epi32(at, _mm_set1_epi32(offset)),
                    )
                };
                let finite = _mm_cmpgt_epi32(
                    exponent,
                    _mm_and_si128(_mm_castps_si128(gathered), magnitude),
                );
                let value =
                    _mm256_cvtps_pd(_mm_blendv_ps(fill, gathered, _mm_castsi128_ps(finite)));
                let pick = |a: usize, bit: usize| if bit == 0 { w0[a] } else { frac[a] };
                let weight = _mm256_mul_pd(
                    _mm256_mul_pd(pick(0, slot >> 2), pick(1, (slot >> 1) & 1)),
                    pick(2, slot & 1),
                );
                let term = _mm256_and_pd(
                    _mm256_mul_pd(weight, value),
                    _mm256_cmp_pd::<_CMP_GT_OQ>(weight, zero),
                );
                acc = _mm256_add_pd(acc, term);
            }
            let result = _mm256_cvtpd_ps(acc);
            let out: &mut [f32; 4] = match out.try_into() {
                Ok(out) => out,
                Err(_) => continue,
            };
            // SAFETY: `out` holds four floats.
            unsafe { _mm_storeu_ps(out.as_mut_ptr(), result) };
        }
        source.line_one_by_one(&points[rest..], &mut values[rest..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume of varied values with non-finite voxels, and points all over it: inside,
    /// on its faces and edges, up to two voxels outside, on exact voxel coordinates.
    fn case(dims: [usize; 3], seed: u64) -> (Vec<f32>, Vec<[f64; 3]>) {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let len = dims.iter().product();
        let mut data: Vec<f32> = (0..len).map(|_| (next() * 2000.0 - 300.0) as f32).collect();
        for (i, special) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0]
            .into_iter()
            .enumerate()
        {
            data[(i * 37 + 11) % len] = special;
        }
        let points = (0..4000)
            .map(|n| {
                [0, 1, 2].map(|a| {
                    // Mostly inside, so that most steps of four take the lanes; else up
                    // to two voxels outside.
                    let v = if next() < 0.9 {
                        next() * (dims[a] - 1) as f64
                    } else {
                        next() * (dims[a] as f64 + 4.0) - 2.0
                    };
                    // Every fifth point on exact voxel coordinates along this axis.
                    if n % 5 == a { v.round() } else { v }
                })
            })
            .collect();
        (data, points)
    }

    #[test]
    fn a_line_has_the_bits_of_the_one_point_form() {
        for (dims, seed) in [([9, 7, 5], 1), ([2, 2, 2], 2), ([31, 3, 12], 3)] {
            let (data, points) = case(dims, seed);
            for fill in [-5.0, 0.0, f32::NAN] {
                let source = Source {
                    data: &data,
                    dims,
                    fill,
                };
                let want: Vec<u32> = points.iter().map(|&v| source.at(v).to_bits()).collect();
                // Every length, so the four-point steps end at every remainder.
                for len in [points.len(), points.len() - 1, 3, 2] {
                    let mut got = vec![0.0f32; len];
                    source.line(&points[..len], &mut got);
                    let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want[..len], "dims {dims:?} fill {fill}");
                }
                #[cfg(target_arch = "x86_64")]
                if crate::imaging::simd::avx2() {
                    let mut got = vec![0.0f32; points.len()];
                    // SAFETY: the CPU has AVX2.
                    unsafe { avx2::line(&source, &points, &mut got) };
                    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_lanes_refuse_a_source_they_could_read_past() {
        let data = vec![1.0f32; 60];
        let source = |dims| Source {
            data: &data,
            dims,
            fill: 0.0,
        };
        assert!(avx2::indexable(&source([3, 4, 5])));
        // More voxels claimed than held, one voxel along an axis, an overflowing product.
        assert!(!avx2::indexable(&source([3, 4, 6])));
        assert!(!avx2::indexable(&source([60, 1, 1])));
        assert!(!avx2::indexable(&source([usize::MAX, 2, 2])));
    }

    #[test]
    fn most_points_of_the_case_take_the_four_point_step() {
        // Otherwise the test above would compare the one-point form with itself.
        let dims = [9, 7, 5];
        let (_, points) = case(dims, 1);
        let inside =
            |v: &[f64; 3]| (0..3).all(|a| v[a] >= 0.0 && floor(v[a]) + 1.0 < dims[a] as f64);
        let fours = points
            .chunks_exact(4)
            .filter(|four| four.iter().all(inside))
            .count();
        assert!(fours > 50, "{fours}");
    }
}
