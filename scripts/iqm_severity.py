#!/usr/bin/env python3
"""How the stored IQMs follow the artefacts of a synthetic warehouse whose severities
are known: Spearman correlation of each IQM with each artefact's severity.

Writes a synthetic warehouse (`cdwqc synth`), imports it (which computes the IQMs),
joins the `iqms` table with the generator's ground truth
(derivatives/cdwqc-synth/ground_truth.tsv) on usable images, and prints one Markdown
table per sequence.

Usage: scripts/iqm_severity.py [--t1 60] [--flair 60] [--grid small] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "cdwqc"
SEVERITIES = ["motion", "ghosting", "blur", "noise", "contrast_loss", "bias_field"]
IQMS = ["snr_total", "snrd_total", "cnr", "cjv", "efc", "fber", "wm2max", "qi_1", "fwhm_avg", "inu_range"]


def run(*args):
    return subprocess.run([str(BINARY), *args], check=True, capture_output=True, text=True).stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t1", type=int, default=60)
    parser.add_argument("--flair", type=int, default=60)
    parser.add_argument("--grid", default="small")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    try:
        from scipy.stats import spearmanr
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "scipy"])
        from scipy.stats import spearmanr

    work = args.work or Path(tempfile.mkdtemp(prefix="cdwqc-iqm-severity-"))
    work.mkdir(parents=True, exist_ok=True)
    warehouse = work / "w"
    db = work / "store.duckdb"
    if not warehouse.exists():
        run("synth", "--out", str(warehouse), "--t1", str(args.t1), "--flair", str(args.flair),
            "--other", "0", "--raters", "1", "--grid", args.grid, "--seed", str(args.seed))
    if not db.exists():
        run("--db", str(db), "init")
    run("--db", str(db), "import", str(warehouse), "--json")
    text = run("--db", str(db), "sql", "--format", "csv",
               "select i.rel_path, q.* from iqms q join images i using (image_id) where q.error is null")
    iqms = {row["rel_path"]: row for row in csv.DictReader(io.StringIO(text))}
    truth_path = warehouse / "derivatives" / "cdwqc-synth" / "ground_truth.tsv"
    with truth_path.open() as f:
        truth = [r for r in csv.DictReader(f, delimiter="\t") if r["usable"] == "1"]
    for sequence in ("T1w", "FLAIR"):
        rows = [(r, iqms[r["path"]]) for r in truth if r["suffix"] == sequence and r["path"] in iqms]
        print(f"\n{sequence}: {len(rows)} usable images, Spearman rho (IQM vs severity)\n")
        print("| IQM | " + " | ".join(SEVERITIES) + " |")
        print("|---|" + "---|" * len(SEVERITIES))
        for iqm in IQMS:
            cells = []
            for sev in SEVERITIES:
                pairs = [
                    (float(t[f"sev_{sev}"]), float(q[iqm]))
                    for t, q in rows
                    if q.get(iqm) not in (None, "")
                ]
                xs, ys = zip(*pairs) if pairs else ((), ())
                if len(set(xs)) < 2 or len(set(ys)) < 2:
                    cells.append("n/a")
                    continue
                rho = spearmanr(xs, ys).statistic
                cells.append(f"{rho:+.2f}")
            print(f"| {iqm} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
