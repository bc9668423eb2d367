#!/usr/bin/env python3
"""Bias-field correction benchmark: cdwqc's N3-style polynomial correction against ANTs N4.

Heads are rendered from the MNI ICBM152 2009 template's grey / white matter maps (1 mm,
tests/data/external/, put there by scripts/setup.sh) in three contrasts (FLAIR, T1w, T2w
tissue means, 2% texture), a skull-and-scalp shell around the brain, then multiplied by a
known smooth field: the exponential of a random cubic polynomial of the voxel coordinates
(scaled to [-1, 1]) with coefficients uniform in [-c, c], TorchIO's RandomBiasField model,
for c in 0.3 (mild), 0.5 (moderate) and 0.8 (severe).

In the same run, one thread each:

  cdwqc   `cdwqc register IMG --preset cpu-small --bias polynomial --corrected OUT --threads 1`
          (its `bias_seconds` only: the registration that follows is not counted)
  ANTs    antspyx 0.6.3 `n4_bias_field_correction` with its defaults (on the whole head)

Measured on every image: the residual field, i.e. the standard deviation over the brain of
log(corrected / clean) (0 = the field fully removed, the global scale does not count), and
the white-matter coefficient of variation (WM fraction > 0.9), before and after each tool.

    .venv/bin/python scripts/bench_bias.py [--json out.json] [--no-build]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests/data/external"
# Tissue means (CSF, GM, WM, shell) of each contrast.
CONTRASTS = {
    "FLAIR": (0.08, 0.75, 0.55, 0.45),
    "T1w": (0.15, 0.55, 0.90, 0.70),
    "T2w": (1.00, 0.60, 0.40, 0.45),
}
STRENGTHS = {"mild": 0.3, "moderate": 0.5, "severe": 0.8}


def ensure_ants():
    try:
        import ants  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "antspyx==0.6.3"])


def build():
    env = dict(os.environ)
    env.setdefault("LIBTORCH", str(REPO / ".deps/libtorch"))
    env.setdefault("DUCKDB_LIB_DIR", str(REPO / ".deps/duckdb"))
    subprocess.check_call(["cargo", "build", "--release", "--bins"], cwd=REPO, env=env)


def polynomial_field(np, shape, coefficient, rng):
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    log_field = np.zeros(shape)
    for i in range(4):
        for j in range(4 - i):
            for k in range(4 - i - j):
                log_field += rng.uniform(-coefficient, coefficient) * x**i * y**j * z**k
    return np.exp(log_field)


def residual_field(np, corrected, clean, brain):
    ratio = np.log(np.maximum(corrected[brain], 1e-6) / np.maximum(clean[brain], 1e-6))
    return float(ratio.std())


def wm_cov(np, data, wm):
    values = data[wm > 0.9]
    return float(values.std() / values.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()

    ensure_ants()
    import ants
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    if not args.no_build:
        build()
    out = args.out or Path(tempfile.mkdtemp(prefix="cdwqc-bias-"))
    out.mkdir(parents=True, exist_ok=True)
    t1 = nib.load(str(DATA / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    gm = np.asarray(nib.load(str(DATA / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).dataobj, dtype=float)
    wm = np.asarray(nib.load(str(DATA / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).dataobj, dtype=float)
    brain = np.asarray(t1.dataobj) > 0
    csf = np.clip(brain.astype(float) - gm - wm, 0.0, 1.0)
    distance = ndimage.distance_transform_edt(~brain)
    shell = ((distance > 3) & (distance <= 9)).astype(float)
    rng = np.random.default_rng(args.seed)
    rows = []
    for contrast, (c_csf, c_gm, c_wm, c_shell) in CONTRASTS.items():
        texture = 1.0 + 0.02 * rng.standard_normal(gm.shape)
        clean = (c_csf * csf + c_gm * gm + c_wm * wm + c_shell * shell) * texture * 1000.0
        for strength, coefficient in STRENGTHS.items():
            field = polynomial_field(np, gm.shape, coefficient, rng)
            biased = (clean * field).astype(np.float32)
            name = f"{contrast}-{strength}"
            path = out / f"{name}.nii.gz"
            nib.save(nib.Nifti1Image(biased, t1.affine), str(path))
            corrected_path = out / f"{name}_cdwqc.nii.gz"
            result = json.loads(
                subprocess.run(
                    [
                        str(REPO / "target/release/cdwqc"),
                        "register",
                        str(path),
                        "--preset",
                        "cpu-small",
                        "--bias",
                        "polynomial",
                        "--corrected",
                        str(corrected_path),
                        "--threads",
                        "1",
                        "--json",
                    ],
                    check=False,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            ours = np.asarray(nib.load(str(corrected_path)).dataobj, dtype=float)
            image = ants.image_read(str(path))
            start = time.perf_counter()
            n4 = ants.n4_bias_field_correction(image).numpy()
            n4_seconds = time.perf_counter() - start
            row = {
                "image": name,
                "coefficient": coefficient,
                "residual_before": residual_field(np, biased, clean, brain),
                "residual_cdwqc": residual_field(np, ours, clean, brain),
                "residual_n4": residual_field(np, n4, clean, brain),
                "wm_cov_clean": wm_cov(np, clean, wm),
                "wm_cov_before": wm_cov(np, biased, wm),
                "wm_cov_cdwqc": wm_cov(np, ours, wm),
                "wm_cov_n4": wm_cov(np, n4, wm),
                "cdwqc_s": result["bias_seconds"],
                "n4_s": n4_seconds,
            }
            rows.append(row)
            print(
                f"{name:16s} residual field {row['residual_before']:.3f} -> cdwqc {row['residual_cdwqc']:.3f}, "
                f"N4 {row['residual_n4']:.3f}; WM CV {row['wm_cov_before']:.3f} -> {row['wm_cov_cdwqc']:.3f} / "
                f"{row['wm_cov_n4']:.3f} (clean {row['wm_cov_clean']:.3f}); {row['cdwqc_s']:.2f} s vs {n4_seconds:.1f} s",
                flush=True,
            )
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    summary = {
        "images": len(rows),
        "residual_before": mean("residual_before"),
        "residual_cdwqc": mean("residual_cdwqc"),
        "residual_n4": mean("residual_n4"),
        "cdwqc_seconds": mean("cdwqc_s"),
        "n4_seconds": mean("n4_s"),
        "speedup": mean("n4_s") / max(mean("cdwqc_s"), 1e-9),
        "load_average": os.getloadavg(),
    }
    print(
        f"mean residual field {summary['residual_before']:.3f} -> cdwqc {summary['residual_cdwqc']:.3f}, "
        f"N4 {summary['residual_n4']:.3f}; {summary['cdwqc_seconds']:.2f} s vs {summary['n4_seconds']:.1f} s per image "
        f"({summary['speedup']:.0f}x); load {summary['load_average'][0]:.1f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
