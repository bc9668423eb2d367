#!/usr/bin/env python3
"""How much of a FLAIR's noise reaches a 3 mm grid (docs/pretrained.md, "Noise at the
source's resolution").

For the usable FLAIR of a warehouse with no motion or contrast artefact, clean (noise
grade 0) and noisy (grade 2): the robust deviation of second differences inside the head
(median absolute value / 0.6745 / sqrt(6), the median over the three axes), relative to
the 0.5-99.5 percentile range, on the source voxels and after the `pretrained` preset's
anti-aliasing (a Gaussian per axis, sigma = sqrt(3^2 - s^2) / 2.3548 mm) and trilinear
sampling every 3 mm, done here with scipy. Prints the medians per grade.

  .venv/bin/python scripts/noise_on_grid.py synth    WAREHOUSE  # cdwqc synth's ground_truth.tsv
  .venv/bin/python scripts/noise_on_grid.py external WAREHOUSE  # scripts/external_warehouse.py's
"""
import csv
import glob
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage


def second_difference_deviation(volume, mask):
    estimates = []
    for axis in range(3):
        inner = [slice(None)] * 3
        inner[axis] = slice(1, -1)
        values = np.abs(np.diff(volume, n=2, axis=axis))[mask[tuple(inner)]]
        if values.size:
            estimates.append(np.median(values) / 0.6745 / np.sqrt(6))
    return float(np.median(estimates)) if estimates else float("nan")


def measure(path):
    image = nib.load(path)
    data = image.get_fdata(dtype=np.float32)
    voxel = np.sqrt((image.affine[:3, :3] ** 2).sum(0))
    low, high = np.percentile(data, [0.5, 99.5])
    span = high - low
    head = ndimage.binary_erosion(data > low + 0.25 * span, iterations=2)
    source = second_difference_deviation(data, head) / span
    sigma = np.where(voxel < 3.0, np.sqrt(np.maximum(9.0 - voxel**2, 0)) / 2.3548 / voxel, 0)
    smoothed = ndimage.gaussian_filter(data, sigma, truncate=3.0)
    step = 3.0 / voxel
    points = np.mgrid[tuple(slice(0, n - 1, s) for n, s in zip(data.shape, step))]
    grid = ndimage.map_coordinates(smoothed, points, order=1)
    grid_head = ndimage.map_coordinates(head.astype(np.float32), points, order=0) > 0.5
    grid_head = ndimage.binary_erosion(grid_head)
    return source, second_difference_deviation(grid, grid_head) / span


def images(kind, root):
    if kind == "synth":
        truth = f"{root}/derivatives/cdwqc-synth/ground_truth.tsv"
        for row in csv.DictReader(open(truth), delimiter="\t"):
            if (row["suffix"] == "FLAIR" and row["usable"] == "1" and row["motion"] == "0"
                    and row["contrast"] == "0" and row["noise"] in ("0", "2")):
                yield row["noise"], f"{root}/{row['path']}"
    else:
        truth = f"{root}/derivatives/external-truth/ground_truth.tsv"
        for row in csv.DictReader(open(truth), delimiter="\t"):
            if (row["kind"] in ("good", "bad") and row["motion"] == "0"
                    and row["contrast"] == "0" and row["noise"] in ("0", "2")):
                found = glob.glob(f"{root}/sub-{row['subject']}/**/*FLAIR.nii*", recursive=True)
                if found:
                    yield row["noise"], found[0]


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("synth", "external"):
        sys.exit(__doc__)
    by_grade = {}
    for grade, path in images(sys.argv[1], sys.argv[2]):
        by_grade.setdefault(grade, []).append(measure(path))
    for grade in sorted(by_grade):
        values = np.array(by_grade[grade])
        print(f"noise grade {grade}: {len(values)} images; source voxels median "
              f"{np.nanmedian(values[:, 0]):.3f} (range {np.nanmin(values[:, 0]):.3f}-"
              f"{np.nanmax(values[:, 0]):.3f}); 3 mm grid median {np.nanmedian(values[:, 1]):.3f} "
              f"(range {np.nanmin(values[:, 1]):.3f}-{np.nanmax(values[:, 1]):.3f})")


if __name__ == "__main__":
    main()
