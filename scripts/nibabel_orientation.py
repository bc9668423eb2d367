"""Computes the expected voxel->world facts for tests/data/orientation_expected.json.

Run: /work/main/.venv/bin/python scripts/nibabel_orientation.py > tests/data/orientation_expected.json
"""
import json
import os

import nibabel as nib
import numpy as np

root = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "external")
out = {}
for name in ["anatomical.nii", "example4d.nii.gz", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"]:
    img = nib.load(os.path.join(root, name))
    affine = img.affine
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    shape = data.shape
    # Probe voxels away from the border so that their neighbours along each world axis exist.
    probes = []
    for frac in [(0.5, 0.5, 0.5), (0.3, 0.6, 0.4), (0.7, 0.4, 0.6)]:
        ijk = [int(f * (s - 1)) for f, s in zip(frac, shape)]
        world = (affine @ np.array(ijk + [1.0]))[:3]
        steps = []
        # One voxel size along +x (R), +y (A), +z (S) in world space: which voxel is there?
        for axis in range(3):
            delta = np.zeros(3)
            delta[axis] = float(np.abs(affine[:3, :3]).max(axis=0)[np.argmax(np.abs(affine[axis, :3]))])
            target = world + delta
            vox = np.linalg.solve(affine[:3, :3], target - affine[:3, 3])
            vox_int = [int(round(v)) for v in vox]
            steps.append({"world": target.tolist(), "voxel": vox_int,
                          "value": float(data[tuple(vox_int)])})
        probes.append({"voxel": ijk, "world": world.tolist(), "value": float(data[tuple(ijk)]),
                       "steps": steps})
    out[name] = {
        "shape": list(shape),
        "affine": affine.tolist(),
        "axcodes": "".join(nib.aff2axcodes(affine)),
        "zooms": [float(z) for z in img.header.get_zooms()[:3]],
        "probes": probes,
    }
print(json.dumps(out, indent=1))
