#!/usr/bin/env python3
"""Speed of the image quality metrics, as ratios measured in one run.

1. MRIQC's functions alone (mriqc.qc.anatomical 24.0.2 plus StructuralQC's glue, on
   arrays in memory, masks given) against cdwqc's whole IQM step (masks, tissue split,
   bias field, every metric) on the same images: `scripts/iqm_reference.py --bench`.
2. The share the IQM step adds to `cdwqc import` on 1 mm volumes: the same synthetic
   warehouse (`cdwqc synth --grid clinical`) imported into fresh stores with and
   without `--no-iqm`, alternating, best of N each.

   With `--baseline BINARY` (another build of cdwqc, e.g. the main branch's), that
   binary's import with IQMs is timed in the same rounds, so a change is measured
   against the previous code under the same load.
3. The IQM step's own time per image as import records it (`iqms.seconds`).

   With `--copies N`, the warehouse imported holds N copies of the images (hard links
   under new subject labels), so that a warehouse-size import's per-image costs are
   measured without the process start and the store's opening weighing on a few images.

Usage: scripts/bench_iqm.py [--images 6] [--repeats 3] [--keep DIR] [--import-only]
                            [--baseline BINARY] [--copies N]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "cdwqc"


def timed(cmd):
    """Wall and CPU seconds (user + system, the command's own) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6, help="T1w and as many FLAIR images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--import-only", action="store_true", help="skip the comparison with MRIQC's functions")
    parser.add_argument("--baseline", type=Path, help="another cdwqc binary whose import with IQMs is timed too")
    parser.add_argument("--copies", type=int, default=1, help="import this many copies of the images")
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} missing: cargo build --release first")
    work = args.keep or Path(tempfile.mkdtemp(prefix="cdwqc-bench-iqm-"))
    work.mkdir(parents=True, exist_ok=True)
    warehouse = work / "w"
    if not warehouse.exists():
        subprocess.run(
            [
                str(BINARY), "synth", "--out", str(warehouse), "--t1", str(args.images),
                "--flair", str(args.images), "--other", "0", "--raters", "1",
                "--grid", "clinical", "--seed", "11",
            ],
            check=True,
            capture_output=True,
        )
    images = sorted(str(p) for p in warehouse.rglob("*.nii.gz") if "derivatives" not in p.parts)
    imported = warehouse
    if args.copies > 1:
        imported = work / f"copies-{args.copies}"
        if not imported.exists():
            for c in range(args.copies):
                for image in images:
                    rel = Path(image).relative_to(warehouse)
                    target = imported / str(rel).replace("sub-", f"sub-c{c}x")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(image, target)
                    except OSError:
                        shutil.copy(image, target)
            shutil.copy(warehouse / "dataset_description.json", imported)
        images = sorted(str(p) for p in imported.rglob("*.nii.gz"))
    print(f"{len(images)} images at 1 mm in {imported}")
    print(f"load average before: {os.getloadavg()}")

    # 2. Import with and without the IQM step (and with the baseline's IQM step).
    runs = [("with IQMs", str(BINARY), []), ("without", str(BINARY), ["--no-iqm"])]
    if args.baseline:
        baseline = str(args.baseline.resolve())
        runs.append(("baseline with IQMs", baseline, []))
        runs.append(("baseline without", baseline, ["--no-iqm"]))
    times = {name: [] for name, _, _ in runs}
    iqm_seconds = {name: [] for name, _, _ in runs}
    for _ in range(args.repeats):
        for name, binary, flag in runs:
            db = work / "bench.duckdb"
            for suffix in ("", ".wal"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            subprocess.run([binary, "--db", str(db), "init"], check=True, capture_output=True)
            times[name].append(timed([binary, "--db", str(db), "import", str(imported), "--json", *flag]))
            if not flag:
                out = subprocess.run(
                    [binary, "--db", str(db), "sql", "select avg(seconds) from iqms", "--format", "csv"],
                    check=True, capture_output=True, text=True,
                ).stdout.split()
                iqm_seconds[name].append(float(out[-1]))
    # Wall time follows the machine's load; CPU time (all cores together) is what the
    # IQM step costs whatever the load.
    pairs = [("with IQMs", "without"), ("baseline with IQMs", "baseline without")]
    for what, k in (("wall", 0), ("CPU", 1)):
        for name, bare in [p for p in pairs if p[0] in times]:
            a = min(t[k] for t in times[name])
            b = min(t[k] for t in times[bare])
            print(
                f"import {what} time, best of {args.repeats}: {name} {a:.2f} s, {bare} {b:.2f} s "
                f"(ratio {a / b:.3f}): the IQM step adds {100 * (a - b) / b:.1f}%, "
                f"{1000 * (a - b) / len(images):.0f} ms per image; "
                f"{1000 * b / len(images):.0f} ms per image without"
            )
        if "baseline with IQMs" in times:
            for name in ("with IQMs", "without"):
                a = min(t[k] for t in times[name])
                b = min(t[k] for t in times["baseline " + name])
                print(f"import {what} time {name}: baseline / this build {b / a:.3f}")
    for name, secs in iqm_seconds.items():
        if secs:
            print(f"IQM step as import records it ({name}): {1000 * min(secs):.0f} ms per image (best of {len(secs)})")
    print(f"load average after: {os.getloadavg()}")

    # 1. MRIQC's functions vs cdwqc's IQM step on the same images (a few of them).
    if args.import_only:
        return
    originals = sorted(str(p) for p in warehouse.rglob("*.nii.gz") if "derivatives" not in p.parts)
    sample = originals[:: max(1, len(originals) // 4)][:4]
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "iqm_reference.py"), "--bench",
         "--repeats", str(args.repeats), "--files", *sample],
        check=True,
    )
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
