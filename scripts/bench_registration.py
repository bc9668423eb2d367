#!/usr/bin/env python3
"""Registration and bias-correction benchmark: cdwqc against ANTs on the same images.

Writes synthetic heads in known poses (examples/registration_phantoms.rs: clinical tilts
up to 20 degrees, offsets up to 30 mm, head sizes +-8%, T1w / FLAIR / T2w, a polynomial
bias field, oblique fields of view), then in the same run, one thread each:

  cdwqc   `cdwqc register IMG --preset paper --bias polynomial --threads 1` (polynomial bias correction,
          affine registration 8/4/2/1 mm);
  ANTs    antspyx: `n4_bias_field_correction`, then `registration(type_of_transform=
          "Affine")` of the N4 image to the same template, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1.

Reports per image and in total: the largest and mean displacement of template brain
points between the estimated and the true template -> image map (mm), the rotation error
(degrees), the seconds of each step, and the white-matter coefficient of variation before
and after each bias correction (white matter = the phantom's WM fraction > 0.9).

With --baseline BIN, an earlier cdwqc build registers the same images too (the two
alternate which goes first): both must find the same transforms, and the ratios of their
bias, registration and whole-process CPU times are printed.

Usage: scripts/bench_registration.py [--images 5] [--voxel 1] [--out DIR] [--json FILE]
                                     [--cdwqc-only] [--baseline BIN]
Installs antspyx==0.6.3 into the running Python when it is missing.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
# CDWQC names another cdwqc binary to measure (an earlier build, say); the default is this
# checkout's release build.
CDWQC = Path(os.environ.get("CDWQC", REPO / "target/release/cdwqc"))
TEMPLATE = REPO / "tests/data/external/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def ensure_ants():
    try:
        import ants  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "antspyx==0.6.3"])


def build():
    env = dict(os.environ)
    env.setdefault("LIBTORCH", str(REPO / ".deps/libtorch"))
    env.setdefault("DUCKDB_LIB_DIR", str(REPO / ".deps/duckdb"))
    subprocess.check_call(
        ["cargo", "build", "--release", "--bins", "--example", "registration_phantoms"],
        cwd=REPO,
        env=env,
    )


def brain_points(nib, np):
    """Template brain points (mm) on a 4 mm lattice, as cdwqc's own error measure."""
    img = nib.load(str(TEMPLATE))
    data = np.asarray(img.dataobj)
    ijk = np.argwhere(data[::4, ::4, ::4] > 0) * 4
    xyz = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    return xyz


def errors(np, points, truth, estimate):
    a = points @ truth[:3, :3].T + truth[:3, 3]
    b = points @ estimate[:3, :3].T + estimate[:3, 3]
    d = np.linalg.norm(a - b, axis=1)
    m = np.linalg.inv(truth) @ estimate
    u, _, vt = np.linalg.svd(m[:3, :3])
    r = u @ vt
    angle = np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
    return float(d.max()), float(d.mean()), float(angle)


def ants_affine_ras(ants, np, path):
    """ANTs' forward transform (template -> image points, LPS) as a RAS 4x4 matrix."""
    tx = ants.read_transform(path)
    p = np.asarray(tx.parameters, dtype=float)
    c = np.asarray(tx.fixed_parameters, dtype=float)
    a = p[:9].reshape(3, 3)
    t = p[9:12]
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + c - a @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def wm_cov(np, data, wm):
    values = data[wm > 0.9]
    return float(values.std() / values.mean())


def run_cdwqc(binary, path, corrected):
    """`cdwqc register` on one image: its JSON result, wall seconds and CPU seconds."""
    started = time.perf_counter()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(
        [
            str(binary),
            "register",
            str(path),
            "--preset",
            "paper",
            "--bias",
            "polynomial",
            "--threads",
            "1",
            "--json",
            "--corrected",
            str(corrected),
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the whole process (decoding, bias, registration, writing): on a
    # shared machine wall time depends on the neighbours, CPU time much less.
    cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    if run.returncode not in (0, 2):
        raise SystemExit(f"{binary} register failed on {path}:\n{run.stderr}")
    return json.loads(run.stdout), wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--voxel", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another cdwqc binary (an earlier build) run on the same images, alternately: "
        "its transforms must be the same, and the time ratios are printed",
    )
    parser.add_argument(
        "--cdwqc-only", action="store_true", help="skip ANTs (accuracy of cdwqc alone, minutes instead of an hour)"
    )
    args = parser.parse_args()

    ants = None
    if not args.cdwqc_only:
        ensure_ants()
        import ants
    import nibabel as nib
    import numpy as np

    if not args.no_build:
        build()
    out = args.out or Path(tempfile.mkdtemp(prefix="cdwqc-registration-"))
    out.mkdir(parents=True, exist_ok=True)
    subprocess.check_call(
        [
            str(REPO / "target/release/examples/registration_phantoms"),
            str(out),
            str(args.images),
            str(args.voxel),
            str(args.seed),
        ]
    )
    truth = json.loads((out / "truth.json").read_text())
    points = brain_points(nib, np)
    fixed = None if ants is None else ants.image_read(str(TEMPLATE))
    rows = []
    for case in truth:
        path = out / case["file"]
        true_map = np.asarray(case["template_to_world"], dtype=float)
        wm = np.asarray(nib.load(str(out / case["white_matter"])).dataobj)
        original = np.asarray(nib.load(str(path)).dataobj)

        corrected = out / (case["file"].replace(".nii.gz", "_cdwqc_bias.nii.gz"))
        baseline = None
        if args.baseline and len(rows) % 2 == 1:
            baseline = run_cdwqc(args.baseline, path, corrected)
        result, cdwqc_wall, cdwqc_cpu = run_cdwqc(CDWQC, path, corrected)
        if args.baseline and baseline is None:
            baseline = run_cdwqc(args.baseline, path, corrected)
        est = np.asarray(result["template_to_image"], dtype=float)
        c_max, c_mean, c_angle = errors(np, points, true_map, est)
        c_cov = wm_cov(np, np.asarray(nib.load(str(corrected)).dataobj), wm)

        a = None
        if not args.cdwqc_only:
            moving = ants.image_read(str(path))
            started, cpu = time.perf_counter(), time.process_time()
            n4 = ants.n4_bias_field_correction(moving)
            n4_seconds = time.perf_counter() - started
            n4_cpu = time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            reg = ants.registration(fixed=fixed, moving=n4, type_of_transform="Affine")
            ants_seconds = time.perf_counter() - started
            ants_cpu = time.process_time() - cpu
            a_map = ants_affine_ras(ants, np, reg["fwdtransforms"][0])
            a_max, a_mean, a_angle = errors(np, points, true_map, a_map)
            a_cov = wm_cov(np, n4.numpy(), wm)
            a = {
                "max_mm": a_max,
                "mean_mm": a_mean,
                "angle_deg": a_angle,
                "n4_s": n4_seconds,
                "registration_s": ants_seconds,
                "n4_cpu_s": n4_cpu,
                "registration_cpu_s": ants_cpu,
                "wm_cov": a_cov,
            }
        row = {
            "image": case["file"],
            "sequence": case["sequence"],
            "rotation_deg": case["rotation_deg"],
            "translation_mm": case["translation_mm"],
            "cdwqc": {
                "max_mm": c_max,
                "mean_mm": c_mean,
                "angle_deg": c_angle,
                "ok": result["ok"],
                "similarity": result["quality"]["similarity"],
                "bias_s": result["bias_seconds"],
                "registration_s": result["seconds"],
                "wall_s": cdwqc_wall,
                "cpu_s": cdwqc_cpu,
                "wm_cov": c_cov,
            },
            "ants": a,
            "wm_cov_before": wm_cov(np, original, wm),
        }
        if baseline is not None:
            b_result, b_wall, b_cpu = baseline
            row["baseline"] = {
                "same_transform": b_result["template_to_image"] == result["template_to_image"]
                and b_result["quality"] == result["quality"],
                "bias_s": b_result["bias_seconds"],
                "registration_s": b_result["seconds"],
                "wall_s": b_wall,
                "cpu_s": b_cpu,
            }
            b = row["baseline"]
            print(
                f"  baseline: bias {b['bias_s']:.2f} s + registration {b['registration_s']:.2f} s "
                f"(CPU {b['cpu_s']:.1f} s) against {result['bias_seconds']:.2f} + {result['seconds']:.2f} s "
                f"(CPU {cdwqc_cpu:.1f} s); same transform and quality: {b['same_transform']}",
                flush=True,
            )
        rows.append(row)
        c = row["cdwqc"]
        print(
            f"{case['file']} {case['sequence']:>5} rot {np.round(case['rotation_deg'], 1)} "
            f"shift {np.round(case['translation_mm'], 1)}\n"
            f"  cdwqc: max {c['max_mm']:.2f} mm mean {c['mean_mm']:.2f} mm angle {c['angle_deg']:.2f} deg, "
            f"bias {c['bias_s']:.1f} s + registration {c['registration_s']:.1f} s, ok={c['ok']} CR {c['similarity']:.3f}, "
            f"WM CoV {row['wm_cov_before']:.3f} -> {c['wm_cov']:.3f}",
            flush=True,
        )
        if a is None:
            continue
        print(
            f"  ANTs : max {a['max_mm']:.2f} mm mean {a['mean_mm']:.2f} mm angle {a['angle_deg']:.2f} deg, "
            f"N4 {a['n4_s']:.1f} s + affine {a['registration_s']:.1f} s "
            f"(CPU: cdwqc {c['cpu_s']:.1f} s for everything, ANTs {a['n4_cpu_s'] + a['registration_cpu_s']:.1f} s)\n"
            f"  WM CoV: ANTs N4 {a['wm_cov']:.3f}",
            flush=True,
        )

    def total(side, key):
        return sum(r[side][key] for r in rows)

    if args.baseline:
        def ratios(key):
            values = sorted(r["baseline"][key] / r["cdwqc"][key] for r in rows)
            return {"median": values[len(values) // 2], "min": values[0], "max": values[-1]}

        comparison = {
            "baseline": str(args.baseline),
            "same_transforms": all(r["baseline"]["same_transform"] for r in rows),
            "registration_seconds_baseline_over_current": ratios("registration_s"),
            "bias_seconds_baseline_over_current": ratios("bias_s"),
            "process_cpu_baseline_over_current": ratios("cpu_s"),
            "load_average": os.getloadavg(),
        }
        print(json.dumps(comparison, indent=2))
        if not comparison["same_transforms"]:
            raise SystemExit("the baseline found other transforms")

    if args.cdwqc_only:
        summary = {
            "images": len(rows),
            "voxel_mm": args.voxel,
            "cdwqc_max_mm": max(r["cdwqc"]["max_mm"] for r in rows),
            "cdwqc_max_angle_deg": max(r["cdwqc"]["angle_deg"] for r in rows),
            "cdwqc_seconds_per_image": (total("cdwqc", "bias_s") + total("cdwqc", "registration_s")) / len(rows),
            "cdwqc_cpu_seconds_per_image": total("cdwqc", "cpu_s") / len(rows),
            "load_average": os.getloadavg(),
        }
        print(json.dumps(summary, indent=2))
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "images": rows}, indent=2) + "\n")
        return

    summary = {
        "images": len(rows),
        "voxel_mm": args.voxel,
        "cdwqc_max_mm": max(r["cdwqc"]["max_mm"] for r in rows),
        "ants_max_mm": max(r["ants"]["max_mm"] for r in rows),
        "cdwqc_max_angle_deg": max(r["cdwqc"]["angle_deg"] for r in rows),
        "ants_max_angle_deg": max(r["ants"]["angle_deg"] for r in rows),
        "cdwqc_seconds_per_image": (total("cdwqc", "bias_s") + total("cdwqc", "registration_s")) / len(rows),
        "ants_seconds_per_image": (total("ants", "n4_s") + total("ants", "registration_s")) / len(rows),
        "registration_speedup": total("ants", "registration_s") / total("cdwqc", "registration_s"),
        "bias_speedup": total("ants", "n4_s") / max(total("cdwqc", "bias_s"), 1e-9),
        "wm_cov_before": sum(r["wm_cov_before"] for r in rows) / len(rows),
        "wm_cov_cdwqc": sum(r["cdwqc"]["wm_cov"] for r in rows) / len(rows),
        "wm_cov_ants_n4": sum(r["ants"]["wm_cov"] for r in rows) / len(rows),
    }
    summary["cpu_ratio_ants_over_cdwqc"] = (total("ants", "n4_cpu_s") + total("ants", "registration_cpu_s")) / total("cdwqc", "cpu_s")
    summary["total_speedup"] = summary["ants_seconds_per_image"] / summary["cdwqc_seconds_per_image"]
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "images": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
