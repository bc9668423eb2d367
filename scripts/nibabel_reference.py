"""Writes tests/data/nibabel_reference.json: what nibabel reads from the real test
files (shape, datatype, affine, axis codes, voxel sizes, first-volume intensities).

Run with the project venv after scripts/setup.sh:
    .venv/bin/python scripts/nibabel_reference.py
"""
import json
import pathlib

import nibabel as nib
import numpy as np

root = pathlib.Path(__file__).resolve().parent.parent
data = root / "tests" / "data" / "external"
own = root / "tests" / "data"


def finite_or_none(v):
    """JSON has no NaN: a non-finite voxel is written as null."""
    v = float(v)
    return v if np.isfinite(v) else None


# A small file of our own with only an oblique qform (qfac -1) and intensity scaling,
# the case the wheels' files do not cover.
rng = np.random.default_rng(7)
theta = np.deg2rad(20)
rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
aff = np.eye(4)
aff[:3, :3] = rot @ np.diag([1.5, 1.2, -2.5])
aff[:3, 3] = [-30.0, 12.5, 40.0]
img = nib.Nifti1Image(rng.integers(-300, 3000, size=(6, 7, 8)).astype(np.int16), None)
img.header.set_qform(aff, code=1)
img.header.set_sform(None, code=0)
img.header.set_slope_inter(2.0, -5.0)
nib.save(img, own / "qform_oblique.nii.gz")

out = {"nibabel": nib.__version__, "files": {}}
for path in sorted(list(data.glob("*.nii*")) + [own / "qform_oblique.nii.gz"]):
    img = nib.load(path)
    hdr = img.header
    vol = np.asarray(img.dataobj, dtype=np.float64)
    if vol.ndim > 3:
        vol = vol[..., 0] if vol.ndim == 4 else vol.reshape(vol.shape[:3] + (-1,))[..., 0]
    finite = vol[np.isfinite(vol)]
    out["files"][path.name] = {
        "nifti_version": 2 if isinstance(hdr, nib.Nifti2Header) else 1,
        "shape": [int(s) for s in img.shape],
        "datatype": str(hdr.get_data_dtype().newbyteorder("=").name),
        "zooms": [float(z) for z in hdr.get_zooms()[:3]],
        "sform_code": int(hdr["sform_code"]),
        "qform_code": int(hdr["qform_code"]),
        "affine": img.affine.tolist(),
        "axcodes": "".join(nib.aff2axcodes(img.affine)),
        "finite_min": float(finite.min()),
        "finite_max": float(finite.max()),
        "finite_mean": float(finite.mean()),
        "nonfinite": int(vol.size - finite.size),
        # A few voxels by (i, j, k) index, to check memory order and scaling.
        "samples": [
            [int(i), int(j), int(k), finite_or_none(vol[i, j, k])]
            for i, j, k in [
                (0, 0, 0),
                (vol.shape[0] // 2, vol.shape[1] // 3, vol.shape[2] // 2),
                (vol.shape[0] - 1, vol.shape[1] - 1, vol.shape[2] - 1),
                (vol.shape[0] // 3, vol.shape[1] // 2, vol.shape[2] - 1),
            ]
        ],
    }
dest = root / "tests" / "data" / "nibabel_reference.json"
dest.write_text(json.dumps(out, indent=1, sort_keys=True, allow_nan=False) + "\n")
print(f"wrote {dest}")
