//! Binary morphology, hole filling and connected pieces of the IQM masks, written as
//! whole-row passes (erosion and dilation) and as floods on a grid padded by one voxel
//! (no bounds checks, no index divisions); same results as the voxel-by-voxel forms.

use super::Grid;

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

/// The grid with one voxel of padding on every side.
struct Padded {
    px: usize,
    pxy: usize,
    len: usize,
}

impl Padded {
    fn of(grid: Grid) -> Self {
        let px = grid.nx + 2;
        let pxy = px * (grid.ny + 2);
        Self {
            px,
            pxy,
            len: pxy * (grid.nz + 2),
        }
    }
    fn at(&self, i: usize, j: usize, k: usize) -> usize {
        (i + 1) + self.px * (j + 1) + self.pxy * (k + 1)
    }
    /// `f(real index, padded index)` for every voxel of the grid, in raster order.
    fn each(&self, grid: Grid, mut f: impl FnMut(usize, usize)) {
        let mut idx = 0;
        for k in 0..grid.nz {
            for j in 0..grid.ny {
                let base = self.at(0, j, k);
                for i in 0..grid.nx {
                    f(idx, base + i);
                    idx += 1;
                }
            }
        }
    }
}

const OPEN: u8 = 0;
const WALL: u8 = 1;
const REACHED: u8 = 2;

/// Floods the OPEN voxels of `state` from `stack` through the given padded offsets.
fn flood(state: &mut [u8], stack: &mut Vec<usize>, steps: &[usize]) {
    while let Some(v) = stack.pop() {
        for &s in steps {
            for n in [v - s, v + s] {
                if state[n] == OPEN {
                    state[n] = REACHED;
                    stack.push(n);
                }
            }
        }
    }
}

/// Padded state: the padding REACHED (it stands for the world outside), mask voxels
/// WALL, the others OPEN.
fn padded_state(mask: &[u8], grid: Grid, pad: &Padded) -> Vec<u8> {
    let mut state = vec![REACHED; pad.len];
    pad.each(grid, |r, p| {
        state[p] = if mask[r] != 0 { WALL } else { OPEN }
    });
    state
}

/// Fills every region of 0s that does not reach the border (6-connectivity).
pub(super) fn fill_holes(mask: &[u8], grid: Grid) -> Vec<u8> {
    let pad = Padded::of(grid);
    let mut state = padded_state(mask, grid, &pad);
    let mut stack = Vec::new();
    let (nx, ny, nz) = (grid.nx, grid.ny, grid.nz);
    for k in 0..nz {
        for j in 0..ny {
            let edge_row = j == 0 || k == 0 || j + 1 == ny || k + 1 == nz;
            for i in 0..nx {
                if edge_row || i == 0 || i + 1 == nx {
                    let p = pad.at(i, j, k);
                    if state[p] == OPEN {
                        state[p] = REACHED;
                        stack.push(p);
                    }
                }
            }
        }
    }
    flood(&mut state, &mut stack, &[1, pad.px, pad.pxy]);
    let mut out = vec![0u8; mask.len()];
    pad.each(grid, |r, p| out[r] = u8::from(state[p] != REACHED));
    out
}

/// Fills, in every slice along each axis, the 0s that do not reach the slice's edge
/// (4-connectivity within the slice).
pub(super) fn fill_holes_slices(mask: &[u8], grid: Grid) -> Vec<u8> {
    let pad = Padded::of(grid);
    let mut out: Vec<u8> = mask.iter().map(|&m| u8::from(m != 0)).collect();
    let dims = [grid.nx, grid.ny, grid.nz];
    let steps = [1, pad.px, pad.pxy];
    let mut stack = Vec::new();
    let initial = padded_state(mask, grid, &pad);
    let mut state = initial.clone();
    for axis in 0..3 {
        let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
        if axis > 0 {
            state.copy_from_slice(&initial);
        }
        // Seeds: open voxels on the edge of their slice (first or last along u or v),
        // that is on the four faces of the grid that are not across `axis`.
        let mut seed = |c: [usize; 3]| {
            let p = pad.at(c[0], c[1], c[2]);
            if state[p] == OPEN {
                state[p] = REACHED;
                stack.push(p);
            }
        };
        for w in 0..dims[axis] {
            for a in 0..dims[u] {
                for b in [0, dims[v] - 1] {
                    let mut c = [0; 3];
                    (c[axis], c[u], c[v]) = (w, a, b);
                    seed(c);
                }
            }
            for b in 0..dims[v] {
                for a in [0, dims[u] - 1] {
                    let mut c = [0; 3];
                    (c[axis], c[u], c[v]) = (w, a, b);
                    seed(c);
                }
            }
        }
        flood(&mut state, &mut stack, &[steps[u], steps[v]]);
        pad.each(grid, |r, p| {
            if state[p] != REACHED {
                out[r] = 1;
            }
        });
    }
    out
}

/// The voxels of the `keep` largest connected pieces (6-connectivity) of a mask; pieces
/// of equal size rank in the order a raster scan meets them.
pub(super) fn largest_pieces(mask: &[u8], grid: Grid, keep: usize) -> Vec<u8> {
    let pad = Padded::of(grid);
    let mut label = vec![0u32; pad.len];
    pad.each(grid, |r, p| {
        if mask[r] != 0 {
            label[p] = u32::MAX;
        }
    });
    let mut sizes: Vec<usize> = vec![0];
    let mut stack = Vec::new();
    let steps = [1, pad.px, pad.pxy];
    pad.each(grid, |_, start| {
        if label[start] != u32::MAX {
            return;
        }
        let id = sizes.len() as u32;
        let mut size = 0;
        label[start] = id;
        stack.push(start);
        while let Some(v) = stack.pop() {
            size += 1;
            for &s in &steps {
                for n in [v - s, v + s] {
                    if label[n] == u32::MAX {
                        label[n] = id;
                        stack.push(n);
                    }
                }
            }
        }
        sizes.push(size);
    });
    let mut order: Vec<usize> = (1..sizes.len()).collect();
    order.sort_by_key(|&id| std::cmp::Reverse(sizes[id]));
    let mut kept = vec![false; sizes.len()];
    for &id in order.iter().take(keep) {
        kept[id] = true;
    }
    let mut out = vec![0u8; mask.len()];
    pad.each(grid, |r, p| out[r] = u8::from(kept[label[p] as usize]));
    out
}

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
