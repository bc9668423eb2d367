//! Registration's inner loop: the moving image sampled trilinearly at template points and
//! summed per template intensity bin, with an AVX2 path that gives the same bits as the
//! scalar one.
//!
//! Nearly all of a registration's time is spent here (about 60 million point samples per
//! 1 mm image). The AVX2 path computes four points at once with the very IEEE operations
//! the scalar path performs, in the same order and without fused multiply-adds, so each
//! sample is the same double; the per-bin sums then run in point order on one lane, as
//! in the scalar path. Results, and so the cached tensors, do not depend on which path
//! ran.

/// Template points of one chunk, coordinates apart (template mm) and their bins.
pub(super) struct Points<'a> {
    pub xs: &'a [f32],
    pub ys: &'a [f32],
    pub zs: &'a [f32],
    pub bins: &'a [u8],
}

/// The moving image as the kernel reads it: finite voxel values, x fastest.
pub(super) struct Moving<'a> {
    pub data: &'a [f32],
    pub dims: [usize; 3],
}

/// Adds (count, sum, sum of squares) per bin into `acc` (three values per bin) for every
/// point that `map` (template mm -> moving voxel coordinates) sends inside the image.
pub(super) fn accumulate(map: &[[f64; 4]; 3], points: &Points, moving: &Moving, acc: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_usable(moving) {
        // SAFETY: the CPU supports AVX2 (checked at run time), and `avx2_usable` checked
        // that the image is two voxels wide or more and every voxel index fits 32 bits.
        unsafe { accumulate_avx2(map, points, moving, acc) };
        return;
    }
    accumulate_scalar(map, points, 0, moving, acc);
}

/// Whether the AVX2 path applies: the CPU has it (`CDWQC_NO_SIMD` unset, see
/// [`crate::imaging::simd::avx2`]), the image is at least two voxels wide along x (each
/// read takes a voxel and its x neighbour) and every voxel index fits a 32-bit lane.
#[cfg(target_arch = "x86_64")]
fn avx2_usable(moving: &Moving) -> bool {
    crate::imaging::simd::avx2()
        && moving.dims[0] >= 2
        && moving.data.len() < i32::MAX as usize
        && moving.data.len() == moving.dims.iter().product::<usize>()
}

/// Every point from `start` on, one at a time.
fn accumulate_scalar(
    m: &[[f64; 4]; 3],
    points: &Points,
    start: usize,
    moving: &Moving,
    acc: &mut [f64],
) {
    let [nx, ny, nz] = moving.dims;
    let (mx, my, mz) = (nx as f64 - 1.0, ny as f64 - 1.0, nz as f64 - 1.0);
    let (di, dj, dk) = steps(moving.dims);
    let d = moving.data;
    for q in start..points.bins.len() {
        let (px, py, pz) = (
            points.xs[q] as f64,
            points.ys[q] as f64,
            points.zs[q] as f64,
        );
        let x = m[0][0] * px + m[0][1] * py + m[0][2] * pz + m[0][3];
        let y = m[1][0] * px + m[1][1] * py + m[1][2] * pz + m[1][3];
        let z = m[2][0] * px + m[2][1] * py + m[2][2] * pz + m[2][3];
        if !(x >= 0.0 && y >= 0.0 && z >= 0.0 && x <= mx && y <= my && z <= mz) {
            continue;
        }
        let (i, j, k) = (
            (x as usize).min(nx.saturating_sub(2)),
            (y as usize).min(ny.saturating_sub(2)),
            (z as usize).min(nz.saturating_sub(2)),
        );
        let (tx, ty, tz) = (x - i as f64, y - j as f64, z - k as f64);
        let at = i + nx * (j + ny * k);
        let c00 = d[at] as f64 * (1.0 - tx) + d[at + di] as f64 * tx;
        let c10 = d[at + dj] as f64 * (1.0 - tx) + d[at + dj + di] as f64 * tx;
        let c01 = d[at + dk] as f64 * (1.0 - tx) + d[at + dk + di] as f64 * tx;
        let c11 = d[at + dk + dj] as f64 * (1.0 - tx) + d[at + dk + dj + di] as f64 * tx;
        let c0 = c00 * (1.0 - ty) + c10 * ty;
        let c1 = c01 * (1.0 - ty) + c11 * ty;
        let v = c0 * (1.0 - tz) + c1 * tz;
        add(acc, points.bins[q], v);
    }
}

/// Index steps to the next voxel along x, y and z (none along an axis of one voxel).
fn steps(dims: [usize; 3]) -> (usize, usize, usize) {
    let [nx, ny, nz] = dims;
    (
        usize::from(nx > 1),
        if ny > 1 { nx } else { 0 },
        if nz > 1 { nx * ny } else { 0 },
    )
}

#[inline(always)]
fn add(acc: &mut [f64], bin: u8, v: f64) {
    let b = 3 * bin as usize;
    acc[b] += 1.0;
    acc[b + 1] += v;
    acc[b + 2] += v * v;
}

/// Eight points per step, as two groups of four: the transform, the inside test, the
/// cell and its weights in AVX2, the eight corners as four x-adjacent pairs read one
/// lane at a time, then the bins' sums lane by lane in point order. Both groups' corners
/// are read before either group's values are needed. Four-lane gathers of the pairs,
/// one group at a time, left most of the loop's time waiting on the first gather
/// (registration 1.14x faster without them, the same sums). Needs an image at least two
/// voxels wide along x and indices that fit 32 bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_avx2(m: &[[f64; 4]; 3], points: &Points, moving: &Moving, acc: &mut [f64]) {
    use std::arch::x86_64::*;
    let n = points.bins.len();
    let [nx, ny, nz] = moving.dims;
    let (_, dj, dk) = steps(moving.dims);
    let row = |r: usize| m[r].map(|c| _mm256_set1_pd(c));
    let (r0, r1, r2) = (row(0), row(1), row(2));
    let zero = _mm256_setzero_pd();
    let one = _mm256_set1_pd(1.0);
    let upper = [nx, ny, nz].map(|s| _mm256_set1_pd(s as f64 - 1.0));
    let cap = [nx, ny, nz].map(|s| _mm_set1_epi32(s.saturating_sub(2) as i32));
    let (nx_v, ny_v) = (_mm_set1_epi32(nx as i32), _mm_set1_epi32(ny as i32));
    // Near voxels of the four lanes to the low half, far ones to the high half.
    let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    let base = moving.data.as_ptr();

    /// Four points' cell: which lanes lie inside, their corner pairs (near and far x as
    /// two f32 in each 64-bit lane) and their weights along each axis.
    struct Cell {
        lanes: i32,
        pairs: [__m256i; 4],
        t: [__m256d; 3],
    }

    // The cell of the four points from `q` (q + 4 <= n), its corners read.
    let cell = |q: usize| -> Cell {
        // SAFETY: q + 4 <= n and the three coordinate slices are as long as the bins.
        let (px, py, pz) = unsafe {
            (
                _mm256_cvtps_pd(_mm_loadu_ps(points.xs.as_ptr().add(q))),
                _mm256_cvtps_pd(_mm_loadu_ps(points.ys.as_ptr().add(q))),
                _mm256_cvtps_pd(_mm_loadu_ps(points.zs.as_ptr().add(q))),
            )
        };
        // ((m0 * px + m1 * py) + m2 * pz) + m3, as the scalar expression associates.
        let apply = |r: &[__m256d; 4]| {
            _mm256_add_pd(
                _mm256_add_pd(
                    _mm256_add_pd(_mm256_mul_pd(r[0], px), _mm256_mul_pd(r[1], py)),
                    _mm256_mul_pd(r[2], pz),
                ),
                r[3],
            )
        };
        let (x, y, z) = (apply(&r0), apply(&r1), apply(&r2));
        // Ordered comparisons: a NaN coordinate is outside, as in the scalar test.
        let inside = _mm256_and_pd(
            _mm256_and_pd(
                _mm256_and_pd(
                    _mm256_cmp_pd::<_CMP_GE_OQ>(x, zero),
                    _mm256_cmp_pd::<_CMP_GE_OQ>(y, zero),
                ),
                _mm256_and_pd(
                    _mm256_cmp_pd::<_CMP_GE_OQ>(z, zero),
                    _mm256_cmp_pd::<_CMP_LE_OQ>(x, upper[0]),
                ),
            ),
            _mm256_and_pd(
                _mm256_cmp_pd::<_CMP_LE_OQ>(y, upper[1]),
                _mm256_cmp_pd::<_CMP_LE_OQ>(z, upper[2]),
            ),
        );
        let lanes = _mm256_movemask_pd(inside);
        // Inside, a coordinate lies in [0, n - 1]: truncation is the scalar `as usize`.
        // Lanes outside compute an index too, replaced below, and are never summed.
        let i = _mm_min_epi32(_mm256_cvttpd_epi32(x), cap[0]);
        let j = _mm_min_epi32(_mm256_cvttpd_epi32(y), cap[1]);
        let k = _mm_min_epi32(_mm256_cvttpd_epi32(z), cap[2]);
        let t = [
            _mm256_sub_pd(x, _mm256_cvtepi32_pd(i)),
            _mm256_sub_pd(y, _mm256_cvtepi32_pd(j)),
            _mm256_sub_pd(z, _mm256_cvtepi32_pd(k)),
        ];
        let at = _mm_add_epi32(
            i,
            _mm_mullo_epi32(nx_v, _mm_add_epi32(j, _mm_mullo_epi32(ny_v, k))),
        );
        // Lanes outside read the first cell instead: each lane's inside mask (64 bits)
        // narrowed to the 32 bits of its index.
        let narrowed = _mm256_permutevar8x32_epi32(
            _mm256_castpd_si256(inside),
            _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6),
        );
        let at = _mm_and_si128(at, _mm256_castsi256_si128(narrowed));
        let mut index = [0i32; 4];
        // SAFETY: `index` holds four 32-bit values.
        unsafe { _mm_storeu_si128(index.as_mut_ptr().cast(), at) };
        // SAFETY: an inside lane's cell corner is clamped to n - 2 along each axis, and an
        // outside lane's is the first voxel; with two or more voxels along x, both voxels
        // of each of the four pairs from either corner lie in the volume.
        let pair = |offset: usize| unsafe {
            let read = |l: usize| {
                base.add(index[l] as usize + offset)
                    .cast::<i64>()
                    .read_unaligned()
            };
            _mm256_setr_epi64x(read(0), read(1), read(2), read(3))
        };
        Cell {
            lanes,
            pairs: [0, dj, dk, dj + dk].map(pair),
            t,
        }
    };

    // The trilinear value of each lane of a cell.
    let value = |cell: &Cell| -> __m256d {
        let [tx, ty, tz] = cell.t;
        let (wx, wy, wz) = (
            _mm256_sub_pd(one, tx),
            _mm256_sub_pd(one, ty),
            _mm256_sub_pd(one, tz),
        );
        let lerp = |a: __m256d, b: __m256d, wa: __m256d, wb: __m256d| {
            _mm256_add_pd(_mm256_mul_pd(a, wa), _mm256_mul_pd(b, wb))
        };
        let x_lerp = |both: __m256i| {
            let split = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(both, split));
            let near = _mm256_cvtps_pd(_mm256_castps256_ps128(split));
            let far = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(split));
            lerp(near, far, wx, tx)
        };
        let c00 = x_lerp(cell.pairs[0]);
        let c10 = x_lerp(cell.pairs[1]);
        let c01 = x_lerp(cell.pairs[2]);
        let c11 = x_lerp(cell.pairs[3]);
        let c0 = lerp(c00, c10, wy, ty);
        let c1 = lerp(c01, c11, wy, ty);
        lerp(c0, c1, wz, tz)
    };

    // Adds the inside lanes of the four points from `q`, in point order.
    let sum = |acc: &mut [f64], q: usize, cell: &Cell| {
        if cell.lanes == 0 {
            return;
        }
        let mut values = [0f64; 4];
        // SAFETY: `values` holds four doubles.
        unsafe { _mm256_storeu_pd(values.as_mut_ptr(), value(cell)) };
        for (lane, value) in values.iter().enumerate() {
            if cell.lanes & (1 << lane) != 0 {
                add(acc, points.bins[q + lane], *value);
            }
        }
    };

    let mut q = 0;
    while q + 8 <= n {
        let (first, second) = (cell(q), cell(q + 4));
        sum(acc, q, &first);
        sum(acc, q + 4, &second);
        q += 8;
    }
    if q + 4 <= n {
        let last = cell(q);
        sum(acc, q, &last);
        q += 4;
    }
    accumulate_scalar(m, points, q, moving, acc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_case(
        rng: &mut ChaCha8Rng,
        dims: [usize; 3],
        n: usize,
    ) -> (Vec<f32>, Vec<[f32; 3]>, Vec<u8>) {
        let data = (0..dims.iter().product::<usize>())
            .map(|_| rng.random_range(0.0f32..1000.0))
            .collect();
        // Points reach past every face so that some fall outside, and some land exactly
        // on the last voxel plane, where the cell is clamped.
        let points = (0..n)
            .map(|q| {
                [0, 1, 2].map(|d| {
                    if q % 17 == 0 {
                        (dims[d] as f32 - 1.0) * 2.0
                    } else {
                        rng.random_range(-3.0f32..dims[d] as f32 * 2.0 + 3.0)
                    }
                })
            })
            .collect();
        let bins = (0..n).map(|_| rng.random_range(0u8..5)).collect();
        (data, points, bins)
    }

    /// Which implementation a test runs.
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    enum Path {
        Scalar,
        Avx2,
        /// Whichever [`accumulate`] picks.
        Dispatched,
    }

    #[cfg(target_arch = "x86_64")]
    fn run(
        path: Path,
        map: &[[f64; 4]; 3],
        data: &[f32],
        dims: [usize; 3],
        points: &[[f32; 3]],
        bins: &[u8],
    ) -> Vec<f64> {
        let xs: Vec<f32> = points.iter().map(|p| p[0]).collect();
        let ys: Vec<f32> = points.iter().map(|p| p[1]).collect();
        let zs: Vec<f32> = points.iter().map(|p| p[2]).collect();
        let points = Points {
            xs: &xs,
            ys: &ys,
            zs: &zs,
            bins,
        };
        let moving = Moving { data, dims };
        let mut acc = vec![0.0; 15];
        match path {
            // SAFETY: the caller checked AVX2 and that the image is two voxels wide or
            // more; the test volumes are small.
            Path::Avx2 => unsafe { accumulate_avx2(map, &points, &moving, &mut acc) },
            Path::Scalar => accumulate_scalar(map, &points, 0, &moving, &mut acc),
            Path::Dispatched => accumulate(map, &points, &moving, &mut acc),
        }
        acc
    }

    /// `map` with the rows of one-voxel axes zeroed: such an axis is only inside at
    /// coordinate 0 exactly.
    #[cfg(target_arch = "x86_64")]
    fn flattened(mut map: [[f64; 4]; 3], dims: [usize; 3]) -> [[f64; 4]; 3] {
        for d in 0..3 {
            if dims[d] == 1 {
                map[d] = [0.0; 4];
            }
        }
        map
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_path_sums_the_same_bits_as_the_scalar_one() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Oblique maps with a half-voxel scale, y and z axes of one and two voxels, and a
        // point count that leaves a scalar tail.
        for (case, dims) in [
            [9, 7, 5],
            [2, 6, 4],
            [5, 1, 3],
            [4, 3, 1],
            [2, 2, 2],
            [3, 1, 1],
        ]
        .into_iter()
        .enumerate()
        {
            let (data, points, bins) = random_case(&mut rng, dims, 1_003);
            let angle: f64 = 0.3 + case as f64 * 0.1;
            let (s, c) = angle.sin_cos();
            let map = flattened(
                [
                    [0.5 * c, -0.5 * s, 0.01, rng.random_range(-1.0..1.0)],
                    [0.5 * s, 0.5 * c, 0.02, rng.random_range(-1.0..1.0)],
                    [0.03, -0.01, 0.5, rng.random_range(-1.0..1.0)],
                ],
                dims,
            );
            let scalar = run(Path::Scalar, &map, &data, dims, &points, &bins);
            let simd = run(Path::Avx2, &map, &data, dims, &points, &bins);
            assert!(scalar[0] > 0.0, "case {case}: no point inside");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&scalar), bits(&simd), "case {case} {dims:?}");
        }
        // One voxel along x: the dispatcher keeps such images off the AVX2 path, whose
        // reads take each voxel with its x neighbour; the scalar sums come back.
        for dims in [[1, 3, 2], [1, 1, 1], [1, 4, 1]] {
            let (data, points, bins) = random_case(&mut rng, dims, 203);
            let map = flattened([[0.0; 4], [0.0, 0.4, 0.0, 0.2], [0.0, 0.0, 0.3, 0.1]], dims);
            let dispatched = run(Path::Dispatched, &map, &data, dims, &points, &bins);
            let scalar = run(Path::Scalar, &map, &data, dims, &points, &bins);
            assert!(scalar[0] > 0.0, "{dims:?}: no point inside");
            assert_eq!(dispatched, scalar, "{dims:?}");
        }
        // A map that sends every point to NaN: nothing counted on either path.
        let (data, points, bins) = random_case(&mut rng, [4, 4, 4], 9);
        let nan = [[f64::NAN; 4]; 3];
        assert!(
            run(Path::Avx2, &nan, &data, [4, 4, 4], &points, &bins)
                .iter()
                .all(|v| *v == 0.0)
        );
        assert!(
            run(Path::Scalar, &nan, &data, [4, 4, 4], &points, &bins)
                .iter()
                .all(|v| *v == 0.0)
        );
    }
}
