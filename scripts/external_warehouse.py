#!/usr/bin/env python3
"""Builds an external test warehouse: FLAIR-named images made by a simulator other than
`cdwqc synth`, for testing QC models outside the generator they were trained on. It is
never used for training or model selection (docs/external-test-set.md).

Anatomy: the MNI ICBM152 2009 template and its grey / white matter maps
(tests/data/external/, put there by scripts/setup.sh), a CSF map derived from them and
a skull and scalp shell built here from the brain mask's distance map, warped per
subject by TorchIO's RandomAffineElasticDeformation, with white-matter lesions.
Contrast: this script's own tissue model for FLAIR (dark CSF, grey matter brighter than
white matter, bright lesions), T1w and T2w. Scanners: five profiles of their own
(vendor, model, 1.5 / 3 T, voxel sizes 1-1.2 mm and a few anisotropic 3D grids, axis
orders, int16 or float32) with dcm2niix-like JSON sidecars. Artefacts: TorchIO's
RandomMotion, RandomGhosting, RandomSpike, RandomBlur, RandomBiasField and RandomNoise,
plus a contrast loss of this script, with strengths drawn inside the band of a grade.

Grades (protocol of src/protocol.rs: 0 none, 1 moderate, 2 severe per category; tier =
the worst grade: good, medium, bad). Strengths per grade, drawn uniformly in the band:

  motion    RandomMotion: rotation degrees / translation mm / movements
              grade 0: <= 0.4 / <= 0.4 / 1      1: 2.5-4 / 2.5-4 / 2      2: 7-11 / 7-11 / 3-4
            or RandomGhosting (intensity, ghosts)
              grade 1: 0.30-0.45, 2-4             2: 0.8-1.1, 4-8
  contrast  RandomBiasField coefficient
              grade 0: <= 0.12     1: 0.35-0.5     2: 0.75-0.95
            or RandomBlur std (mm)                 1: 1.0-1.4      2: 2.0-2.8
            or contrast loss (tissue means pulled towards their mean, fraction)
                                                   1: 0.45-0.6     2: 0.8-0.9
  noise     RandomNoise std, fraction of the white-matter level (magnitude image)
              grade 0: 0.01-0.025  1: 0.06-0.09    2: 0.14-0.20
            or RandomSpike (spikes, intensity)     1: 1, 0.25-0.4  2: 2-3, 0.8-1.2

Rejects (every file is named FLAIR): T1w and T2w contrast (wrong_sequence), 2D
thick-slice FLAIR with 4.5-6 mm slices (not_3d), a FLAIR slab covering a third to a half
of the brain (truncated_fov), tissue label maps and probability maps (derived_map).

Output (BIDS, read by `cdwqc import`):
  OUT/sub-extNNNN/anat/sub-extNNNN_FLAIR.nii.gz (+ .json sidecar)
  OUT/derivatives/external-truth/ratings_truth.tsv   native ratings, rater `truth`
  OUT/derivatives/external-truth/ground_truth.tsv    every parameter of every image

Deterministic for a seed (same bytes; gzip without time stamps), parallel over
processes. Usage:

  .venv/bin/python scripts/external_warehouse.py --out external --n 150 --seed 7
  .venv/bin/python scripts/external_warehouse.py --out external --preview preview.png

TorchIO is installed into this Python if missing (without torch's CUDA wheels); on a CPU
machine whose torch lacks its CUDA libraries, stand-in libraries are built by
scripts/torch_cpu_stubs.py and the script restarts itself with them.
"""
import argparse
import csv
import gzip
import importlib.util
import json
import multiprocessing
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TORCHIO_VERSION = "1.2.1"
# TorchIO's own requirements except torch, installed normally (none depends on torch).
TORCHIO_DEPS = ["deprecated", "einops", "humanize", "jaxtyping", "nibabel", "numpy",
                "packaging", "rich", "scipy", "simpleitk", "tqdm", "typer", "sympy"]


def ensure_torchio():
    """Installs TorchIO if missing. `--no-deps` keeps pip from resolving the installed
    torch's own requirements, which would pull gigabytes of CUDA wheels."""
    if importlib.util.find_spec("torchio") is not None:
        return
    print(f"installing torchio {TORCHIO_VERSION} into {sys.prefix}", file=sys.stderr)
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["--no-deps", f"torchio=={TORCHIO_VERSION}"], check=True)
    missing = [p for p in TORCHIO_DEPS
               if importlib.util.find_spec({"simpleitk": "SimpleITK"}.get(p, p)) is None]
    if missing:
        subprocess.run(pip + missing, check=True)


from torch_cpu_stubs import import_torch  # noqa: E402  (scripts/ is on sys.path)


ensure_torchio()
torch = import_torch()
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torchio as tio  # noqa: E402
from scipy import ndimage  # noqa: E402

TEMPLATE = str(ROOT / "tests" / "data" / "external" / "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz")
TRUTH_DIR = pathlib.Path("derivatives") / "external-truth"

# Tissue means of this simulator's contrast model (relative units), per sequence:
# csf, grey matter, white matter, skull, scalp, lesion.
TISSUES = ("csf", "gm", "wm", "skull", "scalp", "lesion")
CONTRAST = {
    "FLAIR": (0.07, 0.72, 0.52, 0.03, 0.50, 1.05),
    "T1w": (0.15, 0.48, 0.80, 0.04, 0.85, 0.38),
    "T2w": (1.00, 0.60, 0.38, 0.03, 0.55, 0.88),
}

# Scanner profiles of this warehouse: vendor, model, field, station, 3D voxel sizes,
# axis orders, stored type, echo / repetition / inversion times of the FLAIR protocol.
SCANNERS = [
    dict(vendor="Canon_Medical_Systems", model="Vantage Orian", field=1.5, station="MRC-EXT1",
         voxels=[(1.2, 1.2, 1.2), (1.1, 1.1, 1.1)], orders=["LPS", "LAS"], dtype="int16",
         te=0.121, tr=6.0, ti=2.2),
    dict(vendor="Siemens Healthineers", model="MAGNETOM Vida", field=3.0, station="AWP-EXT2",
         voxels=[(1.0, 1.0, 1.0), (1.0, 1.0, 1.2)], orders=["PIR", "LAS"], dtype="int16",
         te=0.386, tr=5.0, ti=1.8),
    dict(vendor="Philips", model="Ingenia Elition X", field=3.0, station="PHILIPS-EXT3",
         voxels=[(1.04, 1.04, 1.1), (1.1, 1.1, 1.1)], orders=["RAS", "LAS"], dtype="float32",
         te=0.31, tr=4.8, ti=1.65),
    dict(vendor="GE MEDICAL SYSTEMS", model="SIGNA Architect", field=3.0, station="GEMR-EXT4",
         voxels=[(1.0, 1.0, 1.0), (1.2, 1.2, 1.2)], orders=["LPS", "ASL"], dtype="int16",
         te=0.13, tr=6.3, ti=1.87),
    dict(vendor="Hitachi", model="ECHELON Smart", field=1.5, station="HIT-EXT5",
         voxels=[(1.2, 1.2, 1.2), (0.9, 0.9, 1.5)], orders=["RAS", "LPS"], dtype="float32",
         te=0.14, tr=9.0, ti=2.4),
]

REJECTS = ("t1w", "t2w", "thick2d", "truncated", "labelmap")
REJECT_REASON = {"t1w": "wrong_sequence", "t2w": "wrong_sequence", "thick2d": "not_3d",
                 "truncated": "truncated_fov", "labelmap": "derived_map"}


def uniform(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def draw_category(rng, category, grade):
    """One artefact of a category at a grade: (mechanism, parameters)."""
    if category == "motion":
        if grade == 0:
            return "motion", dict(degrees=uniform(rng, 0, 0.4), translation=uniform(rng, 0, 0.4),
                                  movements=1)
        if rng.random() < 0.7:
            if grade == 1:
                return "motion", dict(degrees=uniform(rng, 2.5, 4), translation=uniform(rng, 2.5, 4),
                                      movements=2)
            return "motion", dict(degrees=uniform(rng, 7, 11), translation=uniform(rng, 7, 11),
                                  movements=int(rng.integers(3, 5)))
        if grade == 1:
            return "ghosting", dict(intensity=uniform(rng, 0.30, 0.45), ghosts=int(rng.integers(2, 5)))
        return "ghosting", dict(intensity=uniform(rng, 0.8, 1.1), ghosts=int(rng.integers(4, 9)))
    if category == "contrast":
        if grade == 0:
            return "bias", dict(coefficient=uniform(rng, 0, 0.12))
        pick = rng.random()
        if pick < 0.4:
            band = (0.35, 0.5) if grade == 1 else (0.75, 0.95)
            return "bias", dict(coefficient=uniform(rng, *band))
        if pick < 0.7:
            band = (1.0, 1.4) if grade == 1 else (2.0, 2.8)
            return "blur", dict(std_mm=uniform(rng, *band))
        band = (0.45, 0.6) if grade == 1 else (0.8, 0.9)
        return "contrast_loss", dict(fraction=uniform(rng, *band))
    if grade == 0:
        return "noise", dict(std=uniform(rng, 0.01, 0.025))
    if rng.random() < 0.75:
        band = (0.06, 0.09) if grade == 1 else (0.14, 0.20)
        return "noise", dict(std=uniform(rng, *band))
    if grade == 1:
        return "spike", dict(spikes=1, intensity=uniform(rng, 0.25, 0.4))
    return "spike", dict(spikes=int(rng.integers(2, 4)), intensity=uniform(rng, 0.8, 1.2))


def grades_for_tier(rng, tier):
    grades = {"motion": 0, "contrast": 0, "noise": 0}
    categories = list(grades)
    if tier == "medium":
        for c in rng.choice(categories, size=int(rng.integers(1, 3)), replace=False):
            grades[c] = 1
    elif tier == "bad":
        worst = str(rng.choice(categories))
        grades[worst] = 2
        if rng.random() < 0.4:
            grades[str(rng.choice([c for c in categories if c != worst]))] = 1
    return grades


def plan(n, seed):
    """Every image's recipe, drawn in order from one seeded stream."""
    rng = np.random.default_rng(seed)
    n_reject = round(n / 3)
    n_usable = n - n_reject
    n_good = round(n_usable * 0.4)
    n_medium = round(n_usable * 0.3)
    kinds = (["good"] * n_good + ["medium"] * n_medium + ["bad"] * (n_usable - n_good - n_medium)
             + [REJECTS[i % len(REJECTS)] for i in range(n_reject)])
    order = rng.permutation(len(kinds))
    cases = []
    for number, k in enumerate(order, start=1):
        kind = kinds[k]
        scanner = int(rng.integers(len(SCANNERS)))
        profile = SCANNERS[scanner]
        voxel = profile["voxels"][int(rng.integers(len(profile["voxels"])))]
        case = dict(
            subject=f"ext{number:04d}", seed=int(rng.integers(2**31)), kind=kind, scanner=scanner,
            voxel=list(voxel), order=profile["orders"][int(rng.integers(len(profile["orders"])))],
            dtype=profile["dtype"], scale=uniform(rng, 800, 3000),
            anatomy=dict(scales=uniform(rng, 0.92, 1.08), degrees=uniform(rng, -8, 8),
                         translation=uniform(rng, -5, 5), displacement=uniform(rng, 2, 6)),
            contrast_jitter=[uniform(rng, 0.93, 1.07) for _ in TISSUES],
            lesions=int(rng.integers(0, 12)),
        )
        tier = kind if kind in ("good", "medium", "bad") else "good"
        grades = grades_for_tier(rng, tier)
        case["tier"] = tier if kind in ("good", "medium", "bad") else "reject"
        case["grades"] = grades
        case["artefacts"] = {c: draw_category(rng, c, g) for c, g in grades.items()}
        if kind == "thick2d":
            case["voxel"] = [uniform(rng, 0.85, 0.95)] * 2 + [uniform(rng, 4.5, 6.0)]
        if kind == "truncated":
            case["slab"] = dict(fraction=uniform(rng, 0.33, 0.5), start=uniform(rng, 0.0, 1.0))
        if kind == "labelmap":
            case["map"] = "labels" if rng.random() < 0.6 else "probability"
        cases.append(case)
    return cases


class Anatomy:
    """Tissue probability maps on the template grid, cropped around the head."""

    def __init__(self):
        t1 = nib.load((TEMPLATE.format("t1")))
        gm = np.asarray(nib.load((TEMPLATE.format("gm"))).dataobj, dtype=np.float32) / 255.0
        wm = np.asarray(nib.load((TEMPLATE.format("wm"))).dataobj, dtype=np.float32) / 255.0
        brain = np.asarray(t1.dataobj) > 0
        # The head's box: the brain and 16 mm around it for the skull and scalp (the
        # template's brain stem ends at its lower edge).
        pad = ((16, 16), (16, 16), (0, 16))
        gm, wm, brain = (np.pad(a, pad) for a in (gm, wm, brain))
        found = np.argwhere(brain)
        lo = np.maximum(found.min(0) - 16, 0)
        hi = found.max(0) + 17
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        gm, wm, brain = gm[box], wm[box], brain[box]
        affine = t1.affine.copy()
        affine[:3, 3] += affine[:3, :3] @ (lo - np.array([16, 16, 0]))
        csf = np.clip(brain.astype(np.float32) - gm - wm, 0, 1)
        outside = ndimage.distance_transform_edt(~brain).astype(np.float32)

        def band(lo, hi, soft=0.8):
            # Soft shells between two distances from the brain (mm).
            rise = np.clip(-(outside - lo) / soft, -50, 50)
            fall = np.clip((outside - hi) / soft, -50, 50)
            return (1 / (1 + np.exp(rise))) * (1 / (1 + np.exp(fall)))

        csf = np.maximum(csf, band(0.0, 2.0))  # subarachnoid space
        skull = band(2.0, 7.5)
        scalp = band(7.5, 12.5)
        self.maps = {"csf": csf, "gm": gm, "wm": wm, "skull": skull.astype(np.float32),
                     "scalp": scalp.astype(np.float32)}
        self.affine = affine
        # Lesion sites: deep white matter near the ventricles.
        ventricles = ndimage.binary_opening(brain & (csf > 0.9) & (outside == 0), iterations=1)
        near = ndimage.distance_transform_edt(~ventricles) < 12
        self.lesion_sites = np.argwhere(near & (wm > 0.9))


ANATOMY = None


def lesion_map(shape, sites, count, rng):
    out = np.zeros(shape, np.float32)
    for _ in range(count):
        c = sites[int(rng.integers(len(sites)))]
        r = uniform(rng, 1.5, 5.0)
        lo = np.maximum(c - int(3 * r), 0)
        hi = np.minimum(c + int(3 * r) + 1, shape)
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"))
        d2 = ((grid - c[:, None, None, None]) ** 2).sum(0)
        blob = np.exp(-d2 / (2 * (r / 1.5) ** 2)).astype(np.float32)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        out[sl] = np.maximum(out[sl], blob)
    return out


def contrast_image(case, sequence, rng, loss=0.0):
    """The image of one sequence from the tissue maps (this simulator's contrast model)."""
    a = ANATOMY
    means = np.array(CONTRAST[sequence]) * np.array(case["contrast_jitter"])
    if loss > 0:
        # Brain tissues (csf, gm, wm, lesion) lose their differences.
        brain = [0, 1, 2, 5]
        centre = means[brain].mean()
        means[brain] = centre + (1 - loss) * (means[brain] - centre)
    lesions = lesion_map(a.maps["wm"].shape, a.lesion_sites, case["lesions"], rng)
    image = np.zeros_like(a.maps["wm"])
    for i, t in enumerate(TISSUES[:5]):
        weight = a.maps[t] * (1 - lesions) if t == "wm" else a.maps[t]
        image += means[i] * weight
    image += means[5] * lesions * a.maps["wm"]
    return image


def to_subject(image, affine):
    return tio.Subject(im=tio.ScalarImage(tensor=torch.from_numpy(image[None].astype(np.float32)),
                                          affine=affine))


def fixed(value):
    return (value, value)


WARP_STEP = 4


def warp(image, a, nearest):
    """Per-subject anatomy: TorchIO's RandomAffineElasticDeformation warps a coarse map of
    voxel coordinates (every 4 mm; the B-spline field with 7 control points is smooth at
    that scale), which is upsampled and applied to the 1 mm image by one trilinear (or
    nearest) sampling: the same deformation as warping the image itself, 20x faster."""
    fine = np.array(image.shape)
    coarse = -(-fine // WARP_STEP)
    centres = [WARP_STEP * np.arange(n) + (WARP_STEP - 1) / 2 for n in coarse]
    coords = np.stack(np.meshgrid(*centres, indexing="ij")).astype(np.float32)
    step = np.diag([WARP_STEP, WARP_STEP, WARP_STEP, 1.0])
    step[:3, 3] = (WARP_STEP - 1) / 2
    transform = tio.RandomAffineElasticDeformation(
        affine_kwargs=dict(scales=fixed(a["scales"]), degrees=fixed(a["degrees"]),
                           translation=fixed(a["translation"]), default_pad_value=-1e4),
        elastic_kwargs=dict(num_control_points=7, max_displacement=a["displacement"]),
    )
    warped = transform(tio.ScalarImage(tensor=torch.from_numpy(coords),
                                       affine=ANATOMY.affine @ step)).data
    full = torch.nn.functional.interpolate(warped[None], scale_factor=WARP_STEP, mode="trilinear",
                                           align_corners=False)[0]
    full = full[:, :fine[0], :fine[1], :fine[2]]
    # grid_sample wants (W, H, D) order, normalised to [-1, 1] over voxel centres.
    grid = torch.stack([2 * full[2 - i] / (fine[2 - i] - 1) - 1 for i in range(3)], dim=-1)
    sampled = torch.nn.functional.grid_sample(
        torch.from_numpy(image)[None, None], grid[None], mode="nearest" if nearest else "bilinear",
        padding_mode="zeros", align_corners=True)
    return sampled[0, 0].numpy()


def generate(case, out):
    torch.manual_seed(case["seed"])
    rng = np.random.default_rng(case["seed"])
    kind = case["kind"]
    profile = SCANNERS[case["scanner"]]
    sequence = {"t1w": "T1w", "t2w": "T2w"}.get(kind, "FLAIR")
    artefacts = case["artefacts"]
    loss = artefacts["contrast"][1]["fraction"] if artefacts["contrast"][0] == "contrast_loss" else 0.0
    a = case["anatomy"]
    if kind == "labelmap":
        maps = ANATOMY.maps
        stack = np.stack([1 - np.clip(maps["csf"] + maps["gm"] + maps["wm"], 0, 1),
                          maps["csf"], maps["gm"], maps["wm"]])
        image = (np.argmax(stack, 0).astype(np.float32) if case["map"] == "labels"
                 else maps["gm"].copy())
    else:
        image = contrast_image(case, sequence, rng, loss)
    nearest = kind == "labelmap" and case["map"] == "labels"
    image = warp(image, a, nearest)
    subject = to_subject(image, ANATOMY.affine)
    if nearest:
        subject = tio.Subject(im=tio.LabelMap(tensor=subject.im.data.round().to(torch.int16),
                                              affine=ANATOMY.affine))
    voxel = tuple(case["voxel"])
    if kind == "thick2d":
        # The slice profile of a thick 2D slice: smoothing across slices, then sampling.
        sigma = voxel[2] / 2.355
        subject = tio.RandomBlur(std=(0, 0, 0, 0, sigma, sigma))(subject)
    subject = tio.Resample(voxel)(subject)
    if kind != "labelmap":
        transforms = []
        mechanism, p = artefacts["contrast"]
        if mechanism == "blur":
            transforms.append(tio.RandomBlur(std=fixed(p["std_mm"])))
        mechanism, p = artefacts["motion"]
        if mechanism == "motion" and (p["degrees"] > 0 or p["translation"] > 0):
            transforms.append(tio.RandomMotion(degrees=fixed(p["degrees"]),
                                               translation=fixed(p["translation"]),
                                               num_transforms=p["movements"]))
        elif mechanism == "ghosting":
            transforms.append(tio.RandomGhosting(num_ghosts=fixed(p["ghosts"]),
                                                 intensity=fixed(p["intensity"]), axes=(0, 1)))
        mechanism, p = artefacts["noise"]
        if mechanism == "spike":
            transforms.append(tio.RandomSpike(num_spikes=p["spikes"], intensity=fixed(p["intensity"])))
        mechanism, p = artefacts["contrast"]
        if mechanism == "bias" and p["coefficient"] > 0.005:
            transforms.append(tio.RandomBiasField(coefficients=fixed(p["coefficient"]), order=3))
        for t in transforms:
            subject = t(subject)
        # Thermal noise on a magnitude image, relative to the white-matter level.
        wm_level = CONTRAST[sequence][2]
        mechanism, p = artefacts["noise"]
        std = p["std"] if mechanism == "noise" else uniform(rng, 0.01, 0.025)
        noisy = tio.RandomNoise(mean=0, std=fixed(std * wm_level))(subject).im.data
        second = torch.randn_like(noisy) * std * wm_level
        subject.im.set_data(torch.sqrt(noisy ** 2 + second ** 2))
    data = subject.im.data[0].numpy()
    affine = subject.im.affine.copy()
    if kind == "truncated":
        s = case["slab"]
        brain_z = np.argwhere(data > 0.3 * data.max())[:, 2]
        lo, hi = brain_z.min(), brain_z.max()
        depth = int((hi - lo) * s["fraction"])
        start = lo + int((hi - lo - depth) * s["start"])
        data = data[:, :, start:start + depth]
        affine[:3, 3] += affine[:3, 2] * start
    return write(case, sequence, profile, data, affine, out)


def write(case, sequence, profile, data, affine, out):
    kind = case["kind"]
    if kind == "labelmap" and case["map"] == "labels":
        stored = np.rint(data).astype(np.int16)
    elif kind == "labelmap":
        stored = np.clip(data, 0, 1).astype(np.float32)
    elif case["dtype"] == "int16":
        stored = np.clip(np.rint(data * case["scale"]), -32768, 32767).astype(np.int16)
    else:
        stored = (data * case["scale"] / 1000.0).astype(np.float32)
    image = nib.Nifti1Image(stored, affine)
    target = nib.orientations.axcodes2ornt(tuple(case["order"]))
    current = nib.orientations.io_orientation(affine)
    image = image.as_reoriented(nib.orientations.ornt_transform(current, target))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    name = f"sub-{case['subject']}_FLAIR"
    folder = pathlib.Path(out) / f"sub-{case['subject']}" / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed, so a file that exists is complete.
    partial = folder / f".{name}.nii.gz.partial"
    partial.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))
    thick = kind == "thick2d"
    times = {"T1w": (0.0025, 2.3, 0.9), "T2w": (0.095, 3.2, None)}.get(
        sequence, (profile["te"], profile["tr"], profile["ti"]))
    description = {"FLAIR": "3D FLAIR", "T1w": "3D T1 MPRAGE" if case["seed"] % 2 else "FLAIR 3D",
                   "T2w": "T2 SPACE" if case["seed"] % 2 else "3D_FLAIR"}[sequence]
    if thick:
        description = "AX FLAIR 5mm"
    if kind == "labelmap":
        description = "FLAIR_seg" if case["map"] == "labels" else "FLAIR_gm_prob"
    sidecar = {
        "Modality": "MR",
        "MagneticFieldStrength": profile["field"],
        "ImagingFrequency": round(42.577 * profile["field"], 3),
        "Manufacturer": profile["vendor"],
        "ManufacturersModelName": profile["model"],
        "InstitutionName": "External Hospital",
        "StationName": profile["station"],
        "SeriesDescription": description,
        "ProtocolName": description.replace(" ", "_"),
        "ScanningSequence": "SE\\IR" if sequence == "FLAIR" else ("GR\\IR" if sequence == "T1w" else "SE"),
        "MRAcquisitionType": "2D" if thick else "3D",
        "SliceThickness": round(case["voxel"][2], 3),
        "EchoTime": times[0],
        "RepetitionTime": times[1],
        "FlipAngle": 120 if sequence != "T1w" else 8,
        "SeriesNumber": int(case["seed"] % 40) + 2,
        "ConversionSoftware": "dcm2niix",
        "ConversionSoftwareVersion": "v1.0.20230411",
    }
    if times[2] is not None:
        sidecar["InversionTime"] = times[2]
    (folder / f"{name}.json").write_text(json.dumps(sidecar, indent=4) + "\n")
    partial.rename(folder / f"{name}.nii.gz")
    return truth_row(case, profile, str(stored.dtype), image.shape)


def image_path(out, case):
    return pathlib.Path(out) / f"sub-{case['subject']}" / "anat" / f"sub-{case['subject']}_FLAIR.nii.gz"


def truth_row(case, profile, dtype, shape):
    kind = case["kind"]
    row = dict(subject=case["subject"], kind=kind, tier=case["tier"],
               reject_reason=REJECT_REASON.get(kind, ""),
               motion=case["grades"]["motion"], contrast=case["grades"]["contrast"],
               noise=case["grades"]["noise"],
               motion_artefact=json.dumps(case["artefacts"]["motion"]),
               contrast_artefact=json.dumps(case["artefacts"]["contrast"]),
               noise_artefact=json.dumps(case["artefacts"]["noise"]),
               scanner=f"{profile['vendor']} {profile['model']} {profile['field']}T",
               voxel="x".join(f"{v:.2f}" for v in case["voxel"]), order=case["order"],
               dtype=dtype, shape="x".join(str(s) for s in shape),
               lesions=case["lesions"])
    return row


def init_worker():
    global ANATOMY
    torch.set_num_threads(1)
    if ANATOMY is None:
        ANATOMY = Anatomy()


def existing_row(case, out):
    """The truth row of an image a previous run wrote, or None if it is not there."""
    path = image_path(out, case)
    if not path.is_file():
        return None
    header = nib.load(str(path)).header
    row = truth_row(case, SCANNERS[case["scanner"]], str(header.get_data_dtype()),
                    header.get_data_shape())
    row["seconds"] = 0.0
    return row


def work(job):
    case, out = job
    done = existing_row(case, out)
    if done is not None:
        return done
    init_worker()
    started = time.time()
    row = generate(case, out)
    row["seconds"] = round(time.time() - started, 2)
    return row


def write_truth(out, rows):
    truth = pathlib.Path(out) / TRUTH_DIR
    truth.mkdir(parents=True, exist_ok=True)
    columns = ["subject", "suffix", "rater", "usable", "reject_reason", "gado", "motion",
               "contrast", "noise", "comment"]
    with open(truth / "ratings_truth.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            usable = r["tier"] != "reject"
            w.writerow([r["subject"], "FLAIR", "truth", str(usable).lower(),
                        "" if usable else r["reject_reason"], "false" if usable else "",
                        r["motion"] if usable else "", r["contrast"] if usable else "",
                        r["noise"] if usable else "", f"external simulator: {r['kind']}"])
    with open(truth / "ground_truth.tsv", "w", newline="") as f:
        fields = [k for k in rows[0] if k != "seconds"]
        w = csv.DictWriter(f, fieldnames=fields, delimiter="\t", lineterminator="\n",
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (pathlib.Path(out) / "dataset_description.json").write_text(json.dumps({
        "Name": "cdwqc external test warehouse (TorchIO simulator)", "BIDSVersion": "1.9.0",
        "DatasetType": "raw", "GeneratedBy": [{"Name": "scripts/external_warehouse.py"}],
    }, indent=4) + "\n")


def preview(out, rows, path):
    """One row per kind / tier: axial, coronal and sagittal middle slices."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    picks = []
    for kind in ["good", "medium", "bad", *REJECTS]:
        picks += [r for r in rows if r["kind"] == kind][:2]
    fig, axes = plt.subplots(len(picks), 3, figsize=(7, 2.3 * len(picks)))
    for row, ax in zip(picks, axes):
        img = nib.as_closest_canonical(nib.load(
            str(image_path(out, dict(subject=row["subject"])))))
        d = img.get_fdata()
        lo, hi = np.percentile(d, [0.5, 99.5])
        zooms = img.header.get_zooms()
        x, y, z = (s // 2 for s in d.shape)
        for a, (sl, aspect) in zip(ax, [(d[:, :, z].T, zooms[1] / zooms[0]),
                                       (d[:, y, :].T, zooms[2] / zooms[0]),
                                       (d[x, :, :].T, zooms[2] / zooms[1])]):
            a.imshow(sl, origin="lower", cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
            a.set_xticks([])
            a.set_yticks([])
        label = f"{row['subject']} {row['kind']} m{row['motion']} c{row['contrast']} n{row['noise']}"
        ax[0].set_ylabel(label, fontsize=6)
        ax[1].set_title(", ".join(json.loads(row[k])[0] for k in
                                  ("motion_artefact", "contrast_artefact", "noise_artefact")), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=70)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="external", help="warehouse folder (created)")
    parser.add_argument("--n", type=int, default=150, help="images (a third are rejects)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--preview", help="write a PNG of a few images per kind (matplotlib)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the images an interrupted run wrote, make the others")
    parser.add_argument("--truth-only", action="store_true",
                        help="write the truth files for the images present, make none")
    args = parser.parse_args()
    if args.n < 1:
        sys.exit("--n must be at least 1")
    if not pathlib.Path(TEMPLATE.format("t1")).is_file():
        sys.exit(f"{TEMPLATE.format('t1')} is missing: run scripts/setup.sh")
    out = pathlib.Path(args.out)
    if out.exists() and any(out.iterdir()) and not (args.resume or args.truth_only):
        sys.exit(f"{out} exists and is not empty: give a new --out, or --resume")
    out.mkdir(parents=True, exist_ok=True)
    cases = plan(args.n, args.seed)
    started = time.time()
    jobs = [(c, str(out)) for c in cases]
    if args.truth_only:
        rows = [r for r in (existing_row(c, out) for c in cases) if r is not None]
        if not rows:
            sys.exit(f"{out} holds none of the planned images (same --n and --seed?)")
    elif args.workers > 1:
        with multiprocessing.get_context("fork").Pool(args.workers, initializer=init_worker) as pool:
            rows = []
            for i, row in enumerate(pool.imap(work, jobs), start=1):
                rows.append(row)
                print(f"\r{i}/{len(jobs)} images", end="", file=sys.stderr, flush=True)
    if not args.truth_only and args.workers <= 1:
        rows = [work(j) for j in jobs]
    print(file=sys.stderr)
    write_truth(out, rows)
    seconds = time.time() - started
    counts = {}
    for r in rows:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    print(f"{out}: {len(rows)} FLAIR-named images in {seconds:.1f} s "
          f"({sum(r['seconds'] for r in rows):.1f} CPU-s, {args.workers} workers): "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"truth ratings: {out / TRUTH_DIR / 'ratings_truth.tsv'} (rater truth)")
    if args.preview:
        preview(out, rows, args.preview)
        print(f"preview: {args.preview}")


if __name__ == "__main__":
    main()
