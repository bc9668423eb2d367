#!/usr/bin/env python3
"""Reference values of MRIQC's anatomical IQMs on the masks cdwqc computes.

MRIQC 24.0.2 is downloaded from PyPI (no dependencies) into a cache, and only its
`mriqc/qc/anatomical.py` is imported, with a stub `mriqc.config` (that module needs
nothing else but numpy, scipy and, for `summary_stats`, statsmodels). The glue that
MRIQC's `StructuralQC` interface runs between those functions (harmonisation to a
white-matter median of 1000, the order of the calls, which statistics feed which
metric) is reproduced line by line below; AFNI's classic FWHM estimator
(`mri_estimate_FWHM_1dif`, which MRIQC reads from `3dFWHMx`) is reimplemented,
since AFNI is not a Python package.

Usage:
  scripts/iqm_reference.py            # write tests/data/iqm_reference.json
  scripts/iqm_reference.py --check    # compare the binary's values, write nothing
  scripts/iqm_reference.py --bench    # time MRIQC's functions vs `cdwqc iqm --file`

The cases are the real images of the test data (MNI template, nibabel's anatomical
image) and the synthetic phantoms of `cdwqc iqm --phantom`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import types
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MRIQC_VERSION = "24.0.2"
CACHE = ROOT / "target" / "iqm-reference"
BINARY = ROOT / "target" / "release" / "cdwqc"
OUT = ROOT / "tests" / "data" / "iqm_reference.json"
EXTERNAL = ROOT / "tests" / "data" / "external"
REAL_CASES = [
    ("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "T1w"),
    ("anatomical.nii", "T1w"),
]


def ensure_packages():
    """numpy, scipy, statsmodels (summary_stats) and nibabel, installed if missing."""
    missing = []
    for module, package in (
        ("numpy", "numpy"),
        ("scipy", "scipy"),
        ("statsmodels", "statsmodels"),
        ("nibabel", "nibabel"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


def mriqc_anatomical():
    """Imports mriqc/qc/anatomical.py from the PyPI wheel, and nothing else of MRIQC."""
    stub_root = CACHE / f"mriqc-{MRIQC_VERSION}"
    source = stub_root / "mriqc" / "qc" / "anatomical.py"
    if not source.exists():
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        wheel = next(wheels.glob(f"mriqc-{MRIQC_VERSION}-*.whl"), None)
        if wheel is None:
            subprocess.check_call(
                [
                    sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    f"mriqc=={MRIQC_VERSION}", "-d", str(wheels),
                ]
            )
            wheel = next(wheels.glob(f"mriqc-{MRIQC_VERSION}-*.whl"))
        source.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            source.write_bytes(z.read("mriqc/qc/anatomical.py"))
    # The stub package: empty __init__ files and a config with the one logger used.
    config = types.ModuleType("mriqc.config")

    class _Log:
        def warning(self, *args, **kwargs):
            pass

    config.loggers = types.SimpleNamespace(interface=_Log())
    package = types.ModuleType("mriqc")
    package.__path__ = [str(stub_root / "mriqc")]
    package.config = config
    qc = types.ModuleType("mriqc.qc")
    qc.__path__ = [str(stub_root / "mriqc" / "qc")]
    sys.modules.update({"mriqc": package, "mriqc.config": config, "mriqc.qc": qc})
    import importlib

    module = importlib.import_module("mriqc.qc.anatomical")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return module, digest


def afni_fwhm_classic(image, mask, zooms):
    """AFNI's mri_estimate_FWHM_1dif: Forman's first-difference estimate, in mm."""
    import numpy as np

    fim = image.astype(np.float32).astype(np.float64)
    good = mask > 0
    values = fim[good]
    count = values.size
    fsum = values.sum()
    fsq = (values * values).sum()
    if count < 9 or fsq <= 0.0:
        return [-1.0, -1.0, -1.0]
    var = (fsq - (fsum * fsum) / count) / (count - 1.0)
    if var <= 0.0:
        return [-1.0, -1.0, -1.0]
    out = []
    for axis in range(3):
        n = fim.shape[axis]
        lead = [slice(None)] * 3
        follow = [slice(None)] * 3
        lead[axis] = slice(0, n - 1)
        follow[axis] = slice(1, n)
        both = good[tuple(lead)] & good[tuple(follow)]
        d = (fim[tuple(follow)] - fim[tuple(lead)])[both]
        c = d.size
        vard = 0.0 if c < 6 else (np.dot(d, d) - d.sum() ** 2 / c) / (c - 1.0)
        arg = 1.0 - 0.5 * (vard / var)
        dx = float(np.float32(zooms[axis]))
        if arg <= 0.0 or arg >= 1.0:
            out.append(-1.0)
        else:
            out.append(float(np.float32(2.35482 * math.sqrt(-1.0 / (4.0 * math.log(arg))) * dx)))
    return out


def harmonise(data, wm_mask):
    """MRIQC's Harmonize interface (erosion by the 18-neighbourhood, WM median to 1000);
    when erosion leaves nothing, cdwqc falls back to the uneroded mask."""
    import numpy as np
    import scipy.ndimage as nd

    wm_mask = wm_mask.astype(np.float64)
    wm_mask[wm_mask < 0.9] = 0
    wm_mask[wm_mask > 0] = 1
    wm_mask = wm_mask.astype(np.uint8)
    struct = nd.generate_binary_structure(3, 2)
    eroded = nd.binary_erosion(wm_mask, structure=struct).astype(np.uint8)
    if eroded.sum() == 0:
        eroded = wm_mask
    median = np.median(data[eroded > 0])
    data = data * (1000.0 / median)
    # MRIQC writes the harmonised image with the INU-corrected image's header
    # (single precision) and StructuralQC reads it back.
    return data.astype(np.float32).astype(np.float64), float(median)


def load_case(case: Path):
    """The image and masks `cdwqc iqm --masks` wrote, as StructuralQC loads them."""
    import nibabel as nb
    import numpy as np

    imnii = nb.load(case / "image.nii.gz")

    def load(name, dtype):
        return np.asanyarray(nb.load(case / f"{name}.nii.gz").dataobj).astype(dtype)

    return {
        "image": np.asanyarray(imnii.dataobj).astype(np.float64),
        "zooms": imnii.header.get_zooms()[:3],
        "tissue": load("tissue", np.uint8),
        "air": load("air", np.uint8),
        "artefact": load("artefact", np.uint8),
        "head": load("head", np.uint8),
        "rotation": load("rotation", np.uint8),
        "bias": load("bias", np.float64),
    }


def structural_qc(anat, arrays):
    """What mriqc.interfaces.anatomical.StructuralQC._run_interface computes, from
    arrays already in memory."""
    import numpy as np

    image = arrays["image"]
    tissue = arrays["tissue"]
    airdata = arrays["air"]
    artdata = arrays["artefact"]
    headdata = arrays["head"]
    rotdata = arrays["rotation"]
    bias_all = arrays["bias"]
    pvms = {
        label: (tissue == lid).astype(np.float64)
        for label, lid in (("csf", 1), ("gm", 2), ("wm", 3))
    }
    pvmdata = list(pvms.values())

    harmonised, wm_median = harmonise(image, pvms["wm"])
    inudata = np.nan_to_num(harmonised)
    inudata[inudata < 0] = 0
    segdata = tissue

    pvms["bg"] = airdata
    stats = anat.summary_stats(inudata, pvms)
    results = {"summary": stats}

    snrvals = []
    results["snr"] = {}
    for tlabel in ("csf", "wm", "gm"):
        snrvals.append(anat.snr(stats[tlabel]["median"], stats[tlabel]["stdv"], stats[tlabel]["n"]))
        results["snr"][tlabel] = snrvals[-1]
    results["snr"]["total"] = float(np.mean(snrvals))

    results["snrd"] = {
        tlabel: anat.snr_dietrich(
            stats[tlabel]["median"], mad_air=stats["bg"]["mad"], sigma_air=stats["bg"]["stdv"]
        )
        for tlabel in ["csf", "wm", "gm"]
    }
    results["snrd"]["total"] = float(np.mean([val for _, val in list(results["snrd"].items())]))
    results["cnr"] = anat.cnr(
        stats["wm"]["median"], stats["gm"]["median"], stats["bg"]["stdv"],
        stats["wm"]["stdv"], stats["gm"]["stdv"],
    )
    results["fber"] = anat.fber(inudata, headdata, rotdata)
    results["efc"] = anat.efc(inudata, rotdata)
    results["wm2max"] = anat.wm2max(inudata, stats["wm"]["median"])
    results["qi_1"] = anat.art_qi1(airdata, artdata)
    results["cjv"] = anat.cjv(
        stats["wm"]["median"], stats["gm"]["median"], stats["wm"]["mad"], stats["gm"]["mad"]
    )
    zooms = arrays["zooms"]
    in_fwhm = afni_fwhm_classic(image, (segdata > 0).astype(np.uint8), zooms)
    fwhm = np.array(in_fwhm[:3]) / np.array(zooms)
    results["fwhm"] = {
        "x": float(fwhm[0]), "y": float(fwhm[1]), "z": float(fwhm[2]),
        "avg": float(np.average(fwhm)),
    }
    results["icvs"] = anat.volume_fraction(pvmdata)
    results["size"] = {"x": int(inudata.shape[0]), "y": int(inudata.shape[1]), "z": int(inudata.shape[2])}
    results["spacing"] = {i: float(v) for i, v in zip(["x", "y", "z"], zooms)}
    bias = bias_all[segdata > 0]
    results["inu"] = {
        "range": float(np.abs(np.percentile(bias, 95.0) - np.percentile(bias, 5.0))),
        "med": float(np.median(bias)),
    }
    flat = {}
    for k, value in results.items():
        if not isinstance(value, dict):
            flat[k] = value
            continue
        for subk, subval in value.items():
            if isinstance(subval, dict):
                for ssubk, ssubval in subval.items():
                    flat[f"{k}_{subk}_{ssubk}"] = ssubval
            else:
                flat[f"{k}_{subk}"] = subval
    return {k: float(v) for k, v in flat.items()}, wm_median


def run_cdwqc(workdir: Path, extra=None):
    files = []
    for name, _ in REAL_CASES:
        path = EXTERNAL / name
        if not path.exists():
            sys.exit(f"{path} is missing: run scripts/setup.sh first")
        files.append(str(path))
    if extra is not None:
        files = [str(Path(f).resolve()) for f in extra]
    cmd = [str(BINARY), "iqm", "--file", *files, "--masks", str(workdir)]
    if extra is None:
        cmd += ["--phantom", "all"]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not rows:
        sys.exit(f"cdwqc iqm failed ({out.returncode}): {out.stderr}\n{out.stdout}")
    return rows


def rel_diff(a, b):
    if a is None or b is None:
        return 0.0 if (a is None) == (b is None) else math.inf
    if math.isnan(a) and math.isnan(b):
        return 0.0
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def finite_or_none(v):
    return v if v is not None and math.isfinite(v) else None


def bench(anat, workdir, rows, repeats):
    """MRIQC's functions alone, on arrays in memory with the masks given, against
    cdwqc's whole IQM step (masks, tissue split, bias field, every metric; the file
    read excluded) on the same images, in the same run. Best of `repeats` each."""
    print(f"load average {os.getloadavg()[0]:.2f} (1 min), best of {repeats}", flush=True)
    ratios = []
    for row in rows:
        arrays = load_case(workdir / row["name"])
        t = []
        for _ in range(repeats):
            start = time.perf_counter()
            structural_qc(anat, arrays)
            t.append(time.perf_counter() - start)
        mriqc_s = min(t)
        source = row["source"]
        args = ["--phantom", source.split(":", 1)[1]] if source.startswith("phantom:") else ["--file", source]
        r = []
        for _ in range(repeats):
            out = subprocess.run([str(BINARY), "iqm", *args], check=True, capture_output=True, text=True)
            r.append(json.loads(out.stdout.splitlines()[0])["seconds"])
        cdwqc_s = min(r)
        ratios.append(mriqc_s / cdwqc_s)
        shape = "x".join(str(int(row["iqms"][f"size_{a}"])) for a in "xyz")
        print(
            f"{row['name']:<44} {shape:>12}  MRIQC functions {mriqc_s * 1000:8.1f} ms  "
            f"cdwqc IQM step {cdwqc_s * 1000:7.1f} ms  ratio {mriqc_s / cdwqc_s:5.1f}x",
            flush=True,
        )
    ratios.sort()
    print(f"ratio: min {ratios[0]:.1f}x, median {ratios[len(ratios) // 2]:.1f}x, max {ratios[-1]:.1f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    parser.add_argument("--bench", action="store_true", help="time MRIQC's functions against cdwqc")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", nargs="*", default=None, help="with --bench: these images instead")
    args = parser.parse_args()
    ensure_packages()
    import numpy as np
    import scipy
    import statsmodels

    anat, digest = mriqc_anatomical()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = run_cdwqc(workdir, args.files if args.bench else None)
        if args.bench:
            bench(anat, workdir, [r for r in rows if "error" not in r], args.repeats)
            return
        cases = []
        worst = 0.0
        compared = 0
        for row in rows:
            if "error" in row:
                sys.exit(f"{row['name']}: cdwqc could not measure it: {row['error']}")
            expected, wm_median = structural_qc(anat, load_case(workdir / row["name"]))
            ours = row["iqms"]
            for key, value in expected.items():
                d = rel_diff(finite_or_none(value), ours.get(key))
                worst = max(worst, d)
                compared += 1
                if d > 1e-6:
                    print(f"{row['name']}: {key}: MRIQC {value!r} cdwqc {ours.get(key)!r} (rel {d:.2e})")
            missing = sorted(set(ours) - set(expected))
            if missing:
                print(f"{row['name']}: cdwqc columns without a reference: {missing}")
            cases.append(
                {
                    "name": row["name"],
                    "source": row["source"].replace(str(ROOT) + "/", ""),
                    "contrast": row["contrast"],
                    "wm_median": wm_median,
                    "expected": {k: finite_or_none(v) for k, v in sorted(expected.items())},
                }
            )
        print(f"{len(cases)} cases, {compared} values, largest relative difference {worst:.3e}")
        if args.check:
            sys.exit(0 if worst <= 1e-6 else 1)
        doc = {
            "format": 1,
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "generator": "scripts/iqm_reference.py",
            "reference": {
                "mriqc": MRIQC_VERSION,
                "module": "mriqc/qc/anatomical.py from the PyPI wheel, with a stub mriqc.config",
                "module_sha256": digest,
                "numpy": np.__version__,
                "scipy": scipy.__version__,
                "statsmodels": statsmodels.__version__,
                "python": sys.version.split()[0],
            },
            "notes": [
                "Masks are cdwqc's (iqm version 1), exported with `cdwqc iqm --file/--phantom --masks`; "
                "each metric is MRIQC's function of the same image and masks.",
                "fwhm_* comes from a numpy reimplementation of AFNI's mri_estimate_FWHM_1dif, "
                "not from AFNI; inu_* applies MRIQC's statistics to cdwqc's polynomial bias field.",
                "Paths under tests/data/external are set up by scripts/setup.sh; phantom:NAME is "
                "iqm::phantom(NAME).",
                "null means a non-finite value.",
            ],
            "cases": cases,
        }
        OUT.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
