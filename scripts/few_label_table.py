#!/usr/bin/env python3
"""Tabulates scripts/few_label_study.sh: reads compare_<fraction>_<seed>.json (the output
of `cdwqc report compare --json`) and prints, per labelled fraction, each method's
balanced accuracy per seed with its 95% CI, the mean over seeds, and each method's paired
difference against target-only on the same images (subject bootstrap CI; `>0` where the
whole interval is above zero, `<0` where below).

    python scripts/few_label_table.py STUDY_DIR TASK FRACTION... -- SEED...
"""
import json
import sys
from pathlib import Path

# Arms by run id (fl-<task>-<arm>-f<fraction>-s<seed>): the four methods, finetune from
# the shipped model, and the shipped model with no label (as is, and adapted).
ARMS = {
    "ssda": "ssda",
    "shipped": "finetune from the shipped model",
    "finetune": "finetune",
    "target-only": "target-only",
    "source-only": "source-only",
    "asis": "shipped model, no label",
    "adabn": "shipped model adapted (AdaBN), no label",
}
METHODS = list(ARMS)


def arm_of(run_id, task, fraction, seed):
    prefix, suffix = f"fl-{task}-", f"-f{fraction}-s{seed}"
    if run_id.startswith(prefix) and run_id.endswith(suffix):
        return run_id[len(prefix) : -len(suffix)]
    return None


def fmt(v, ci=True):
    if v is None or v.get("value") is None:
        return "n/a"
    s = f"{v['value']:.3f}"
    if ci and v.get("ci95"):
        lo, hi = v["ci95"]
        s += f" [{lo:.3f}, {hi:.3f}]"
    return s


def main(argv):
    if "--" not in argv or len(argv) < 5:
        sys.exit(__doc__)
    cut = argv.index("--")
    study, task, fractions, seeds = Path(argv[1]), argv[2], argv[3:cut], argv[cut + 1 :]
    print(f"# Few-label study, task `{task}`\n")
    print(
        "Balanced accuracy on the external images each run did not learn from "
        "(95% subject bootstrap CIs); the difference is paired against target-only on "
        "the images both scored.\n"
    )
    for fraction in fractions:
        rows = {m: [] for m in METHODS}
        diffs = {m: [] for m in METHODS}
        images = {}
        for seed in seeds:
            path = study / f"compare_{fraction}_{seed}.json"
            if not path.exists():
                print(f"(missing {path})")
                continue
            c = json.loads(path.read_text())
            baseline = f"fl-{task}-target-only-f{fraction}-s{seed}"
            for r in c["runs"]:
                arm = arm_of(r["run_id"], task, fraction, seed)
                if r["task"] != task or arm not in rows:
                    continue
                rows[arm].append(r["balanced_accuracy"])
                images.setdefault(arm, []).append(r["images"])
            for d in c["versus_baseline"]:
                arm = arm_of(d["run_id"], task, fraction, seed)
                if d["task"] == task and d["baseline_run_id"] == baseline and arm in diffs:
                    diffs[arm].append(d["difference"])
        print(f"## {fraction}% of the external subjects labelled\n")
        header = ["method"] + [f"seed {s}" for s in seeds] + ["mean", "vs target-only (per seed)"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for m in METHODS:
            if not rows[m]:
                continue
            values = [v["value"] for v in rows[m] if v.get("value") is not None]
            mean = f"{sum(values) / len(values):.3f}" if values else "n/a"
            signs = []
            for d in diffs[m]:
                if d.get("value") is None:
                    signs.append("n/a")
                    continue
                lo, hi = d.get("ci95") or (None, None)
                mark = " >0" if lo is not None and lo > 0 else (" <0" if hi is not None and hi < 0 else "")
                signs.append(f"{d['value']:+.3f}{mark}")
            n = images.get(m, [])
            cells = [f"{ARMS[m]} ({min(n)}-{max(n)} images)" if n else ARMS[m]]
            cells += [fmt(v) for v in rows[m]] + [mean, ", ".join(signs) or "(baseline)"]
            print("| " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main(sys.argv)
