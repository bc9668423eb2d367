//! Binary morphology, hole filling and connected pieces of the IQM masks, written as
//! whole-row passes (erosion and dilation) and as unions of overlapping runs (hole
//! filling, connected pieces); same results as the voxel-by-voxel forms.

use super::Grid;
use crate::imaging::simd::with_avx2;

/// One pass of the line {-1, 0, +1} along `axis`: the AND (erosion) or OR (dilation)
/// of a voxel and its two neighbours, `outside` beyond the grid. Masks hold 0 or 1.
fn line(mask: &[u8], grid: Grid, axis: usize, outside: u8, erosion: bool) -> Vec<u8> {
    let op = |a: u8, b: u8| if erosion { a & b } else { a | b };
    let mut out = vec![0u8; mask.len()];
    match axis {
        0 => {
            let nx = grid.nx;
            for (row, o) in mask.chunks_exact(nx).zip(out.chunks_exact_mut(nx)) {
                if nx == 1 {
                    o[0] = op(op(outside, row[0]), outside);
                    continue;
                }
                o[0] = op(op(outside, row[0]), row[1]);
                o[nx - 1] = op(op(row[nx - 2], row[nx - 1]), outside);
                for (((o, &a), &b), &c) in o[1..nx - 1]
                    .iter_mut()
                    .zip(&row[..nx - 2])
                    .zip(&row[1..nx - 1])
                    .zip(&row[2..])
                {
                    *o = op(op(a, b), c);
                }
            }
        }
        _ => {
            // Along j the unit is a row within a slice; along k, a whole slice.
            let (unit, count, block) = if axis == 1 {
                (grid.nx, grid.ny, grid.sxy())
            } else {
                (grid.sxy(), grid.nz, grid.len())
            };
            for (m, o) in mask.chunks_exact(block).zip(out.chunks_exact_mut(block)) {
                for c in 0..count {
                    let here = &m[c * unit..(c + 1) * unit];
                    let target = &mut o[c * unit..(c + 1) * unit];
                    target.copy_from_slice(here);
                    for side in [c.checked_sub(1), (c + 1 < count).then_some(c + 1)] {
                        match side {
                            Some(s) => {
                                let n = &m[s * unit..(s + 1) * unit];
                                for (t, &v) in target.iter_mut().zip(n) {
                                    *t = op(*t, v);
                                }
                            }
                            None => target.iter_mut().for_each(|t| *t = op(*t, outside)),
                        }
                    }
                }
            }
        }
    }
    out
}

fn combine(a: &mut [u8], b: &[u8], erosion: bool) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x = if erosion { *x & y } else { *x | y };
    }
}

with_avx2! {
/// Erosion (or dilation) by the 3x3x3 cross (6-neighbourhood) or the 18-neighbourhood
/// (`generate_binary_structure(3, 2)`), voxels beyond the grid counting as `outside`.
/// The cross is the union of three lines and the 18-neighbourhood the union of three
/// plane squares, each square two lines in sequence: an erosion by a union is the AND
/// of the erosions, a dilation the OR of the dilations.
pub(super) fn morph(
    mask: &[u8],
    grid: Grid,
    eighteen: bool,
    outside: u8,
    erosion: bool,
) -> Vec<u8> {
    let binary: Vec<u8> = mask.iter().map(|&m| u8::from(m != 0)).collect();
    let pass = |m: &[u8], axis| line(m, grid, axis, outside, erosion);
    if eighteen {
        let along_i = pass(&binary, 0);
        let along_j = pass(&binary, 1);
        let mut out = pass(&along_i, 1);
        combine(&mut out, &pass(&along_i, 2), erosion);
        combine(&mut out, &pass(&along_j, 2), erosion);
        out
    } else {
        let mut out = pass(&binary, 0);
        combine(&mut out, &pass(&binary, 1), erosion);
        combine(&mut out, &pass(&binary, 2), erosion);
        out
    }
}
}

/// Runs of equal voxels along the rows of a mask: the connected pieces are found by
/// joining the runs of neighbouring rows that overlap (union-find over runs), a few
/// operations per run where a flood spends several per voxel.
struct Runs {
    /// Start and end (exclusive) of each run along its row, rows in order.
    start: Vec<u32>,
    end: Vec<u32>,
    /// The runs of row `r` are `first[r]..first[r + 1]`.
    first: Vec<usize>,
}

/// The first index from `i` on whose voxel is not set when `set` (or set when not),
/// `row.len()` when there is none: eight voxels at a time while they are all alike.
fn skip(row: &[u8], mut i: usize, set: bool) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(eight) = row.get(i..i + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(eight);
        let word = u64::from_le_bytes(bytes);
        // Set: no byte is zero (the classic zero-byte test); not set: every byte is.
        let alike = if set {
            word.wrapping_sub(ONES) & !word & HIGHS == 0
        } else {
            word == 0
        };
        if !alike {
            break;
        }
        i += 8;
    }
    while i < row.len() && (row[i] != 0) == set {
        i += 1;
    }
    i
}

impl Runs {
    /// The runs of voxels that are set (`set`) or not, rows of `width` voxels.
    fn of(mask: &[u8], width: usize, set: bool) -> Self {
        let mut runs = Runs {
            start: Vec::new(),
            end: Vec::new(),
            first: Vec::with_capacity(mask.len() / width.max(1) + 1),
        };
        for row in mask.chunks_exact(width) {
            runs.first.push(runs.start.len());
            let mut i = skip(row, 0, !set);
            while i < width {
                let from = i;
                i = skip(row, i, set);
                runs.start.push(from as u32);
                runs.end.push(i as u32);
                i = skip(row, i, !set);
            }
        }
        runs.first.push(runs.start.len());
        runs
    }

    fn len(&self) -> usize {
        self.start.len()
    }

    fn of_row(&self, r: usize) -> std::ops::Range<usize> {
        self.first[r]..self.first[r + 1]
    }

    /// Joins the overlapping runs of rows `a` and `b` (face neighbours along the row).
    fn join(&self, pieces: &mut Pieces, a: usize, b: usize) {
        let (mut x, x_end) = (self.first[a], self.first[a + 1]);
        let (mut y, y_end) = (self.first[b], self.first[b + 1]);
        while x < x_end && y < y_end {
            if self.start[x] < self.end[y] && self.start[y] < self.end[x] {
                pieces.union(x, y);
            }
            if self.end[x] < self.end[y] {
                x += 1;
            } else {
                y += 1;
            }
        }
    }
}

/// Union-find over runs; a piece's root is its first run in raster order.
struct Pieces {
    parent: Vec<usize>,
}

impl Pieces {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn root(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.parent[hi] = lo;
        }
    }
}

/// The pieces of `runs` on a grid of rows `(j, k)`, `ny` rows to a slice, joined with
/// the row before along j and the row before along k (6-connectivity in 3D).
fn pieces_3d(runs: &Runs, ny: usize, nz: usize) -> Pieces {
    let mut pieces = Pieces::new(runs.len());
    for k in 0..nz {
        for j in 0..ny {
            let r = j + ny * k;
            if j > 0 {
                runs.join(&mut pieces, r, r - 1);
            }
            if k > 0 {
                runs.join(&mut pieces, r, r - ny);
            }
        }
    }
    pieces
}

with_avx2! {
/// Fills every region of 0s that does not reach the border (6-connectivity).
pub(super) fn fill_holes(mask: &[u8], grid: Grid) -> Vec<u8> {
    let (nx, ny, nz) = (grid.nx, grid.ny, grid.nz);
    let open = Runs::of(mask, nx, false);
    let mut pieces = pieces_3d(&open, ny, nz);
    let mut outside = vec![false; open.len()];
    for k in 0..nz {
        for j in 0..ny {
            let edge_row = j == 0 || k == 0 || j + 1 == ny || k + 1 == nz;
            for x in open.of_row(j + ny * k) {
                if edge_row || open.start[x] == 0 || open.end[x] as usize == nx {
                    let root = pieces.root(x);
                    outside[root] = true;
                }
            }
        }
    }
    let mut out: Vec<u8> = mask.iter().map(|&m| u8::from(m != 0)).collect();
    fill_enclosed(&open, &mut pieces, &outside, nx, &mut out);
    out
}
}

/// Sets the voxels of every run whose piece is not `outside`.
fn fill_enclosed(runs: &Runs, pieces: &mut Pieces, outside: &[bool], width: usize, out: &mut [u8]) {
    for r in 0..runs.first.len() - 1 {
        for x in runs.of_row(r) {
            if !outside[pieces.root(x)] {
                let row = r * width;
                out[row + runs.start[x] as usize..row + runs.end[x] as usize].fill(1);
            }
        }
    }
}

with_avx2! {
/// Fills, in every slice along each axis, the 0s that do not reach the slice's edge
/// (4-connectivity within the slice).
pub(super) fn fill_holes_slices(mask: &[u8], grid: Grid) -> Vec<u8> {
    let (nx, ny, nz) = (grid.nx, grid.ny, grid.nz);
    let mut out: Vec<u8> = mask.iter().map(|&m| u8::from(m != 0)).collect();
    // Slices across z (rows joined along j) and across y (rows joined along k) share the
    // runs along x.
    let open = Runs::of(mask, nx, false);
    for across_z in [true, false] {
        let mut pieces = Pieces::new(open.len());
        for k in 0..nz {
            for j in 0..ny {
                let r = j + ny * k;
                if across_z && j > 0 {
                    open.join(&mut pieces, r, r - 1);
                }
                if !across_z && k > 0 {
                    open.join(&mut pieces, r, r - ny);
                }
            }
        }
        let mut outside = vec![false; open.len()];
        for k in 0..nz {
            for j in 0..ny {
                let edge_row = if across_z {
                    j == 0 || j + 1 == ny
                } else {
                    k == 0 || k + 1 == nz
                };
                for x in open.of_row(j + ny * k) {
                    if edge_row || open.start[x] == 0 || open.end[x] as usize == nx {
                        let root = pieces.root(x);
                        outside[root] = true;
                    }
                }
            }
        }
        fill_enclosed(&open, &mut pieces, &outside, nx, &mut out);
    }
    // Slices across x: the mask transposed so that rows run along j, indexed by (k, i),
    // and joined along k.
    let mut transposed = vec![0u8; mask.len()];
    for k in 0..nz {
        for j in 0..ny {
            let row = nx * (j + ny * k);
            for i in 0..nx {
                transposed[j + ny * (k + nz * i)] = mask[row + i];
            }
        }
    }
    let open = Runs::of(&transposed, ny, false);
    let mut pieces = Pieces::new(open.len());
    let mut outside = vec![false; open.len()];
    for i in 0..nx {
        for k in 0..nz {
            let r = k + nz * i;
            if k > 0 {
                open.join(&mut pieces, r, r - 1);
            }
        }
    }
    for i in 0..nx {
        for k in 0..nz {
            let edge_row = k == 0 || k + 1 == nz;
            for x in open.of_row(k + nz * i) {
                if edge_row || open.start[x] == 0 || open.end[x] as usize == ny {
                    let root = pieces.root(x);
                    outside[root] = true;
                }
            }
        }
    }
    for i in 0..nx {
        for k in 0..nz {
            for x in open.of_row(k + nz * i) {
                if !outside[pieces.root(x)] {
                    for j in open.start[x] as usize..open.end[x] as usize {
                        out[i + nx * (j + ny * k)] = 1;
                    }
                }
            }
        }
    }
    out
}
}

with_avx2! {
/// The voxels of the `keep` largest connected pieces (6-connectivity) of a mask; pieces
/// of equal size rank in the order a raster scan meets them.
pub(super) fn largest_pieces(mask: &[u8], grid: Grid, keep: usize) -> Vec<u8> {
    let (nx, ny, nz) = (grid.nx, grid.ny, grid.nz);
    let set = Runs::of(mask, nx, true);
    let mut pieces = pieces_3d(&set, ny, nz);
    let mut size = vec![0usize; set.len()];
    for x in 0..set.len() {
        let root = pieces.root(x);
        size[root] += (set.end[x] - set.start[x]) as usize;
    }
    // Roots are each piece's first run, so ascending roots are the raster scan's order.
    let mut roots: Vec<usize> = (0..set.len()).filter(|&x| pieces.root(x) == x).collect();
    roots.sort_by_key(|&x| std::cmp::Reverse(size[x]));
    let mut kept = vec![false; set.len()];
    for &x in roots.iter().take(keep) {
        kept[x] = true;
    }
    let mut out = vec![0u8; mask.len()];
    for r in 0..set.first.len() - 1 {
        for x in set.of_row(r) {
            if kept[pieces.root(x)] {
                let row = r * nx;
                out[row + set.start[x] as usize..row + set.end[x] as usize].fill(1);
            }
        }
    }
    out
}
}

with_avx2! {
/// The voxels labelled `label` eroded by the 18-neighbourhood, voxels beyond the grid
/// counting as outside the mask: `morph(label mask, grid, true, 0, true)` in one pass
/// over slices, with no full-size intermediate. The 18-neighbourhood is the 3x3 square
/// in a voxel's own slice and the 5-voxel plus in the slices either side, so a voxel
/// stays when its slice's square and both neighbouring slices' pluses are all in the
/// mask; squares and pluses are kept for three slices at a time.
pub(super) fn erode_label_18(labels: &[u8], grid: Grid, label: u8) -> Vec<u8> {
    let (nx, ny, nz, sxy) = (grid.nx, grid.ny, grid.nz, grid.sxy());
    let mut out = vec![0u8; labels.len()];
    if nx < 3 || ny < 3 || nz < 3 {
        // Every voxel touches the border along some axis.
        return out;
    }
    // Per slice: the mask, its rows ANDed along i (`across`), the 3x3 square and the plus.
    let mut mask = vec![0u8; sxy];
    let mut across = vec![0u8; sxy];
    let mut squares = [vec![0u8; sxy], vec![0u8; sxy], vec![0u8; sxy]];
    let mut pluses = [vec![0u8; sxy], vec![0u8; sxy], vec![0u8; sxy]];
    let mut slice = |k: usize, square: &mut [u8], plus: &mut [u8]| {
        for (m, &t) in mask.iter_mut().zip(&labels[k * sxy..(k + 1) * sxy]) {
            *m = u8::from(t == label);
        }
        for (a, row) in across.chunks_exact_mut(nx).zip(mask.chunks_exact(nx)) {
            a[0] = 0;
            a[nx - 1] = 0;
            for (((a, &l), &c), &r) in a[1..nx - 1]
                .iter_mut()
                .zip(&row[..nx - 2])
                .zip(&row[1..nx - 1])
                .zip(&row[2..])
            {
                *a = l & c & r;
            }
        }
        square[..nx].fill(0);
        plus[..nx].fill(0);
        square[(ny - 1) * nx..].fill(0);
        plus[(ny - 1) * nx..].fill(0);
        for j in 1..ny - 1 {
            let row = |r: usize| r * nx..(r + 1) * nx;
            let (a, h, b) = (&across[row(j - 1)], &across[row(j)], &across[row(j + 1)]);
            let (up, down) = (&mask[row(j - 1)], &mask[row(j + 1)]);
            for (((s, &a), &h), &b) in square[row(j)].iter_mut().zip(a).zip(h).zip(b) {
                *s = a & h & b;
            }
            // The plus: the row's three voxels and those above and below the centre.
            for (((p, &u), &h), &d) in plus[row(j)].iter_mut().zip(up).zip(h).zip(down) {
                *p = u & h & d;
            }
        }
    };
    // Slices 0 and nz - 1 touch the border: they stay 0; slice k needs k - 1 and k + 1.
    for k in 0..2 {
        slice(k, &mut squares[k], &mut pluses[k]);
    }
    for k in 1..nz - 1 {
        let (prev, here, next) = ((k - 1) % 3, k % 3, (k + 1) % 3);
        slice(k + 1, &mut squares[next], &mut pluses[next]);
        let o = &mut out[k * sxy..(k + 1) * sxy];
        for (((o, &s), &before), &after) in o
            .iter_mut()
            .zip(&squares[here])
            .zip(&pluses[prev])
            .zip(&pluses[next])
        {
            *o = s & before & after;
        }
    }
    out
}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The runs found one voxel at a time.
    fn runs_by_voxel(mask: &[u8], width: usize, set: bool) -> Vec<Vec<(u32, u32)>> {
        mask.chunks_exact(width)
            .map(|row| {
                let mut out = Vec::new();
                let mut from = None;
                for (i, &m) in row.iter().enumerate() {
                    match (from, (m != 0) == set) {
                        (None, true) => from = Some(i),
                        (Some(f), false) => {
                            out.push((f as u32, i as u32));
                            from = None;
                        }
                        _ => {}
                    }
                }
                if let Some(f) = from {
                    out.push((f as u32, row.len() as u32));
                }
                out
            })
            .collect()
    }

    #[test]
    fn runs_skipping_eight_voxels_at_a_time_equal_the_voxel_by_voxel_runs() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for width in [1usize, 7, 8, 9, 31, 64, 100] {
            for mean_run in [1usize, 3, 12, 40] {
                // Long runs of zeros and of set voxels holding any non-zero byte.
                let mut mask = Vec::new();
                let mut on = rng.random_bool(0.5);
                while mask.len() < width * 11 {
                    let n = rng.random_range(1..=2 * mean_run);
                    for _ in 0..n {
                        mask.push(if on { rng.random_range(1..=255u8) } else { 0 });
                    }
                    on = !on;
                }
                mask.truncate(width * 11);
                for set in [true, false] {
                    let runs = Runs::of(&mask, width, set);
                    let got: Vec<Vec<(u32, u32)>> = (0..11)
                        .map(|r| {
                            runs.of_row(r)
                                .map(|x| (runs.start[x], runs.end[x]))
                                .collect()
                        })
                        .collect();
                    assert_eq!(
                        got,
                        runs_by_voxel(&mask, width, set),
                        "{width} {mean_run} {set}"
                    );
                }
            }
        }
    }
}
