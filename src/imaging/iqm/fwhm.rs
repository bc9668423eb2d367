//! AFNI's FWHM sums for images of integers, summed in independent lanes: when every
//! masked voxel holds an integer small enough that no partial sum can pass 2^53, every
//! addition is exact, so the sums are the raster-order sums to the bit whatever the
//! order, and the additions need not wait on each other.

use super::{FwhmSums, Grid};

/// Independent running sums per quantity: one 256-bit register of doubles.
const LANES: usize = 4;

/// `(x + ROUNDER) - ROUNDER` is `x` rounded to an integer when `|x| < 2^51`.
const ROUNDER: f64 = 6_755_399_441_055_744.0;

/// The largest magnitude a masked value may have on a grid of `n` voxels: the sums of
/// squared differences (the largest of the sums) then stay at or below
/// `n * (2 * limit)^2 <= 2^53`, where doubles hold every integer.
fn limit(n: usize) -> f64 {
    let limit = (2f64.powi(53) / (4.0 * n.max(1) as f64)).sqrt().floor();
    limit.min(4_194_304.0)
}

/// The FWHM sums of `image` over `mask` when every masked value is an integer within
/// [`limit`] and the CPU has AVX2; `None` otherwise (the raster-order sums then apply).
pub(super) fn exact_sums(image: &[f32], dims: [usize; 3], mask: &[u8]) -> Option<FwhmSums> {
    #[cfg(target_arch = "x86_64")]
    if crate::imaging::simd::avx2()
        && image.len() == mask.len()
        && image.len() == dims.iter().product::<usize>()
    {
        // SAFETY: the CPU supports AVX2 (checked at run time), and the image, its mask
        // and the grid agree in size, which every row's reads rely on.
        return unsafe { avx2::exact_sums(image, dims, mask) };
    }
    let _ = (image, dims, mask);
    None
}

/// Running sums per lane.
#[derive(Default)]
struct Lanes {
    /// The masked values and their squares.
    fsum: [f64; LANES],
    fsq: [f64; LANES],
    count: [u64; LANES],
    /// Per axis, the differences between masked neighbours and their squares.
    sums: [[f64; LANES]; 3],
    squares: [[f64; LANES]; 3],
    counts: [[u64; LANES]; 3],
    /// Set when a masked value is not an integer within the limit.
    outside: [u64; LANES],
}

/// A row's values and mask, and those of its neighbouring rows along j and k.
pub(super) struct Rows<'a> {
    pub(super) here: (&'a [f32], &'a [u8]),
    pub(super) along_j: (&'a [f32], &'a [u8]),
    pub(super) along_k: (&'a [f32], &'a [u8]),
}

impl Lanes {
    /// Adds voxel `i` of the row into lane 0, its right neighbour counting when
    /// `right` holds: the ends of rows that fill no whole register.
    fn add(&mut self, rows: &Rows<'_>, i: usize, right: bool, limit: f64) {
        let (values, mask) = rows.here;
        let m = mask[i] != 0;
        let x = f64::from(values[i]);
        let integral = (x + ROUNDER) - ROUNDER == x;
        self.outside[0] |= u64::from(m & !(integral & (x.abs() <= limit)));
        let a = if m { x } else { 0.0 };
        self.fsum[0] += a;
        self.fsq[0] += a * a;
        self.count[0] += u64::from(m);
        let next = (i + 1).min(values.len() - 1);
        let neighbours = [
            (values[next], right & (mask[next] != 0)),
            (rows.along_j.0[i], rows.along_j.1[i] != 0),
            (rows.along_k.0[i], rows.along_k.1[i] != 0),
        ];
        for (axis, (w, masked)) in neighbours.into_iter().enumerate() {
            let pair = m & masked;
            let d = if pair { f64::from(w) - x } else { 0.0 };
            self.sums[axis][0] += d;
            self.squares[axis][0] += d * d;
            self.counts[axis][0] += u64::from(pair);
        }
    }

    fn finish(self) -> Option<FwhmSums> {
        if self.outside.iter().any(|&o| o != 0) {
            return None;
        }
        // Integers below 2^53: every addition is exact, in any order.
        let total = |lanes: [f64; LANES]| lanes.iter().sum::<f64>();
        let count = |lanes: [u64; LANES]| lanes.iter().sum::<u64>() as usize;
        Some(FwhmSums {
            fsum: total(self.fsum),
            fsq: total(self.fsq),
            count: count(self.count),
            sums: self.sums.map(total),
            squares: self.squares.map(total),
            counts: self.counts.map(count),
        })
    }
}

/// Calls `f` with each row that holds a masked voxel, in raster order, its neighbours
/// and the span from its first to its last masked voxel.
pub(super) fn each_row(
    image: &[f32],
    dims: [usize; 3],
    mask: &[u8],
    mut f: impl FnMut(&Rows<'_>, std::ops::Range<usize>),
) {
    let grid = Grid::new(dims);
    let (nx, ny, nz, sxy) = (grid.nx, grid.ny, grid.nz, grid.sxy());
    let zeros = vec![0u8; nx];
    for k in 0..nz {
        for j in 0..ny {
            let row = nx * (j + ny * k);
            let labels = &mask[row..row + nx];
            let Some(first) = labels.iter().position(|&m| m != 0) else {
                continue;
            };
            let last = labels.iter().rposition(|&m| m != 0).unwrap_or(first);
            let here = (&image[row..row + nx], labels);
            // Where a row has no neighbour along j or k, its own values stand in with
            // an empty mask.
            let next_row = |step: usize, exists: bool| {
                if exists {
                    (
                        &image[row + step..row + step + nx],
                        &mask[row + step..row + step + nx],
                    )
                } else {
                    (here.0, &zeros[..])
                }
            };
            let rows = Rows {
                here,
                along_j: next_row(nx, j + 1 < ny),
                along_k: next_row(sxy, k + 1 < nz),
            };
            f(&rows, first..last + 1);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{FwhmSums, LANES, Lanes, ROUNDER, each_row, limit};
    use std::arch::x86_64::*;

    /// The running sums, four lanes each.
    struct Sums {
        fsum: __m256d,
        fsq: __m256d,
        count: __m256i,
        sums: [__m256d; 3],
        squares: [__m256d; 3],
        counts: [__m256i; 3],
        outside: __m256i,
    }

    /// Four values from `values[at..at + 4]`, widened.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn widened(values: &[f32], at: usize) -> __m256d {
        let four: &[f32; 4] = values[at..at + 4].try_into().unwrap_or(&[0.0; 4]);
        // SAFETY: `four` holds four floats.
        _mm256_cvtps_pd(unsafe { _mm_loadu_ps(four.as_ptr()) })
    }

    /// All ones in each lane whose mask byte in `mask[at..at + 4]` is set.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn set(mask: &[u8], at: usize) -> __m256i {
        let four: [u8; 4] = mask[at..at + 4].try_into().unwrap_or([0; 4]);
        let bytes = _mm_cvtsi32_si128(i32::from_le_bytes(four));
        let zero = _mm256_cmpeq_epi64(_mm256_cvtepu8_epi64(bytes), _mm256_setzero_si256());
        _mm256_xor_si256(zero, _mm256_set1_epi64x(-1))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn exact_sums(image: &[f32], dims: [usize; 3], mask: &[u8]) -> Option<FwhmSums> {
        let limit_f = limit(image.len());
        let rounder = _mm256_set1_pd(ROUNDER);
        let limit = _mm256_set1_pd(limit_f);
        let magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
        let zero_d = _mm256_setzero_pd();
        let zero_i = _mm256_setzero_si256();
        let mut acc = Sums {
            fsum: zero_d,
            fsq: zero_d,
            count: zero_i,
            sums: [zero_d; 3],
            squares: [zero_d; 3],
            counts: [zero_i; 3],
            outside: zero_i,
        };
        let mut tails = Lanes::default();
        let nx = dims[0];
        each_row(image, dims, mask, |rows, range| {
            let (values, labels) = rows.here;
            // The last voxel of a grid row has no right neighbour; every other one has.
            let paired_end = range.end.min(nx - 1).max(range.start);
            let mut i = range.start;
            while i + LANES <= paired_end {
                let x = widened(values, i);
                let m = set(labels, i);
                let md = _mm256_castsi256_pd(m);
                let rounded = _mm256_sub_pd(_mm256_add_pd(x, rounder), rounder);
                let integral = _mm256_cmp_pd::<_CMP_EQ_OQ>(rounded, x);
                let within = _mm256_cmp_pd::<_CMP_LE_OQ>(_mm256_and_pd(x, magnitude), limit);
                let fine = _mm256_castpd_si256(_mm256_and_pd(integral, within));
                acc.outside = _mm256_or_si256(acc.outside, _mm256_andnot_si256(fine, m));
                let a = _mm256_and_pd(x, md);
                acc.fsum = _mm256_add_pd(acc.fsum, a);
                acc.fsq = _mm256_add_pd(acc.fsq, _mm256_mul_pd(a, a));
                acc.count = _mm256_sub_epi64(acc.count, m);
                let neighbours = [
                    (values, labels, i + 1),
                    (rows.along_j.0, rows.along_j.1, i),
                    (rows.along_k.0, rows.along_k.1, i),
                ];
                for (axis, (w_values, w_labels, at)) in neighbours.into_iter().enumerate() {
                    let pair = _mm256_and_si256(m, set(w_labels, at));
                    let d = _mm256_and_pd(
                        _mm256_sub_pd(widened(w_values, at), x),
                        _mm256_castsi256_pd(pair),
                    );
                    acc.sums[axis] = _mm256_add_pd(acc.sums[axis], d);
                    acc.squares[axis] = _mm256_add_pd(acc.squares[axis], _mm256_mul_pd(d, d));
                    acc.counts[axis] = _mm256_sub_epi64(acc.counts[axis], pair);
                }
                i += LANES;
            }
            while i < range.end {
                tails.add(rows, i, i + 1 < nx, limit_f);
                i += 1;
            }
        });
        let doubles = |v: __m256d| {
            let mut out = [0.0f64; LANES];
            // SAFETY: `out` holds four doubles.
            unsafe { _mm256_storeu_pd(out.as_mut_ptr(), v) };
            out
        };
        let integers = |v: __m256i| {
            let mut out = [0u64; LANES];
            // SAFETY: `out` holds four 64-bit integers.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
            out
        };
        let merge = |lanes: &mut [f64; LANES], v: __m256d| {
            for (l, x) in lanes.iter_mut().zip(doubles(v)) {
                *l += x;
            }
        };
        let merge_counts = |lanes: &mut [u64; LANES], v: __m256i| {
            for (l, x) in lanes.iter_mut().zip(integers(v)) {
                *l += x;
            }
        };
        merge(&mut tails.fsum, acc.fsum);
        merge(&mut tails.fsq, acc.fsq);
        merge_counts(&mut tails.count, acc.count);
        for (l, x) in tails.outside.iter_mut().zip(integers(acc.outside)) {
            *l |= x;
        }
        for axis in 0..3 {
            merge(&mut tails.sums[axis], acc.sums[axis]);
            merge(&mut tails.squares[axis], acc.squares[axis]);
            merge_counts(&mut tails.counts[axis], acc.counts[axis]);
        }
        tails.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(s: &FwhmSums) -> Vec<u64> {
        let mut b = vec![s.fsum.to_bits(), s.fsq.to_bits(), s.count as u64];
        for axis in 0..3 {
            b.extend([
                s.sums[axis].to_bits(),
                s.squares[axis].to_bits(),
                s.counts[axis] as u64,
            ]);
        }
        b
    }

    #[test]
    fn limit_keeps_the_largest_sum_within_two_to_the_53() {
        for n in [1usize, 7, 1000, 7_327_320, 400_000_000] {
            let m = limit(n);
            assert!(4.0 * n as f64 * m * m <= 2f64.powi(53), "{n}");
            assert!(m >= 1.0, "{n}");
        }
        assert_eq!(limit(7_327_320), 17_530.0);
    }

    #[test]
    fn lanes_equal_the_raster_order_sums_and_refuse_what_they_cannot_sum_exactly() {
        let dims = [13usize, 5, 4];
        let n = dims.iter().product::<usize>();
        let mask: Vec<u8> = (0..n)
            .map(|i| u8::from(i % 7 != 3 && i % 11 != 5))
            .collect();
        let raster = |image: &[f32]| super::super::fwhm_sums_in_raster_order(image, dims, &mask);
        let large = limit(n) as f32;
        let mut image: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 2001) as f32 - 1000.0)
            .collect();
        image[5] = -0.0;
        image[17] = large;
        image[18] = -large;
        let Some(got) = exact_sums(&image, dims, &mask) else {
            // Without AVX2 the raster order is the only path.
            #[cfg(target_arch = "x86_64")]
            assert!(!std::arch::is_x86_feature_detected!("avx2"));
            return;
        };
        assert_eq!(bits(&got), bits(&raster(&image)));
        // A fraction or a value past the limit, masked, sends the image to the raster
        // order; unmasked, it changes nothing.
        let masked = (0..n).find(|&i| mask[i] != 0 && i > 20).unwrap_or(0);
        let unmasked = (0..n).find(|&i| mask[i] == 0).unwrap_or(0);
        for bad in [0.5f32, large + 1.0, -large - 1.0, 1.0e30] {
            let mut other = image.clone();
            other[masked] = bad;
            assert!(exact_sums(&other, dims, &mask).is_none(), "{bad}");
            let mut other = image.clone();
            other[unmasked] = bad;
            let got = exact_sums(&other, dims, &mask).expect("unmasked");
            assert_eq!(bits(&got), bits(&raster(&other)), "{bad}");
        }
    }
}
