"""Agreement statistics speed: cdwqc against scikit-learn, statsmodels and krippendorff,
on the same ratings, in the same run.

Generates one seeded data set (by default 200,000 subjects x 5 raters, 5 ordered
categories, about 20% of the cells missing: 1,000,000 cells, about 800,000 ratings,
drawn like `examples/bench_metrics.rs` does), writes it to a temporary file, and times

  - Cohen's kappa of raters 1 and 2, unweighted and quadratic (sklearn cohen_kappa_score)
  - balanced accuracy of rater 2 against rater 1 (sklearn balanced_accuracy_score)
  - Fleiss' kappa over the subjects rated by every rater (statsmodels aggregate_raters +
    fleiss_kappa; and fleiss_kappa alone on a count table built beforehand)
  - Krippendorff's alpha, nominal and ordinal, over every subject (krippendorff.alpha on
    the raters x subjects matrix with NaN for missing)

in Python, and the same statistics in cdwqc by running the example binary
`bench_metrics --input FILE --json` (built here with `cargo build --release --example
bench_metrics`, so CARGO_TARGET_DIR and .cargo/config.toml apply). Python and cdwqc
alternate, one pass each per repetition, after one untimed warm-up pass each; the table
shows medians over the repetitions and the median of the per-repetition ratios. Both
sides' values must agree to 1e-9 (relative), or the script exits 1.

Needs, in the venv (not installed by this script):

    .venv/bin/pip install scikit-learn==1.9.1 statsmodels==0.15.0 krippendorff==0.9.0

Usage:

    .venv/bin/python scripts/bench_metrics.py [--subjects 200000 --raters 5 --repeat 5]
"""
import argparse
import importlib
import importlib.metadata
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

root = pathlib.Path(__file__).resolve().parent.parent
PIP_LINE = ".venv/bin/pip install scikit-learn==1.9.1 statsmodels==0.15.0 krippendorff==0.9.0"
MAGIC = b"CDWQCRT1"
TOLERANCE = 1e-9


def require_libraries():
    missing = []
    versions = {}
    for module, name in [("sklearn", "scikit-learn"), ("statsmodels", "statsmodels"),
                         ("krippendorff", "krippendorff")]:
        try:
            importlib.import_module(module)
            versions[name] = importlib.metadata.version(name)
        except ImportError:
            missing.append(name)
    if missing:
        sys.exit(f"missing Python package(s): {', '.join(missing)}. Install them with:\n"
                 f"    {PIP_LINE}")
    versions["numpy"] = np.__version__
    return versions


def generate(subjects, raters, categories, missing, seed):
    """Like examples/bench_metrics.rs: a true category per subject; each rater misses
    with probability `missing`, else gives the truth with probability 0.7, else a
    uniform category. Returns subjects x raters float64 with NaN for missing."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, categories, size=(subjects, 1))
    absent = rng.random((subjects, raters)) < missing
    faithful = rng.random((subjects, raters)) < 0.7
    other = rng.integers(0, categories, size=(subjects, raters))
    data = np.where(faithful, truth, other).astype(np.float64)
    data[absent] = np.nan
    return data


def write_ratings(path, data, categories):
    cells = np.where(np.isnan(data), -1, data).astype(np.int8)
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(np.array([data.shape[0], data.shape[1], categories], dtype="<u8").tobytes())
        f.write(cells.tobytes(order="C"))


def build_binary():
    """`cargo build --release --example bench_metrics` (a no-op when up to date);
    returns the executable cargo reports, wherever its target directory is."""
    command = ["cargo", "build", "--release", "--example", "bench_metrics",
               "--message-format=json-render-diagnostics"]
    try:
        done = subprocess.run(command, cwd=root, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        sys.exit("cargo not found: install Rust (see README.md) to build the cdwqc side")
    if done.returncode != 0:
        sys.exit(f"`{' '.join(command[:5])}` failed (exit {done.returncode})")
    for line in done.stdout.splitlines():
        message = json.loads(line)
        if (message.get("reason") == "compiler-artifact"
                and message["target"]["name"] == "bench_metrics" and message.get("executable")):
            return message["executable"]
    sys.exit("cargo built no bench_metrics executable")


def python_statistics(data, categories):
    """(key, label, library call, fn, in the total) in the order cdwqc runs them."""
    from krippendorff import alpha
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    labels = np.arange(categories)

    def pair():
        first, second = data[:, 0], data[:, 1]
        both = ~(np.isnan(first) | np.isnan(second))
        return first[both], second[both]

    def complete():
        return data[~np.isnan(data).any(axis=1)]

    complete_table = (complete()[..., None] == labels).sum(axis=1)

    return [
        ("cohen_kappa", "Cohen's kappa, raters 1-2", "sklearn cohen_kappa_score",
         lambda: cohen_kappa_score(*pair(), labels=labels), True),
        ("cohen_kappa_quadratic", "Cohen's kappa quadratic, raters 1-2",
         "sklearn cohen_kappa_score(weights='quadratic')",
         lambda: cohen_kappa_score(*pair(), labels=labels, weights="quadratic"), True),
        ("balanced_accuracy", "balanced accuracy, rater 2 vs 1", "sklearn balanced_accuracy_score",
         lambda: balanced_accuracy_score(*pair()), True),
        ("fleiss_kappa", "Fleiss' kappa, complete subjects",
         "statsmodels aggregate_raters + fleiss_kappa",
         lambda: fleiss_kappa(aggregate_raters(complete())[0], method="fleiss"), True),
        ("fleiss_kappa_from_counts", "  same, count table given (kernel only)",
         "statsmodels fleiss_kappa",
         lambda: fleiss_kappa(complete_table, method="fleiss"), False),
        ("krippendorff_alpha_nominal", "Krippendorff's alpha nominal", "krippendorff.alpha",
         lambda: alpha(reliability_data=data.T, level_of_measurement="nominal",
                       value_domain=labels), True),
        ("krippendorff_alpha_ordinal", "Krippendorff's alpha ordinal", "krippendorff.alpha",
         lambda: alpha(reliability_data=data.T, level_of_measurement="ordinal",
                       value_domain=labels), True),
    ]


def python_pass(stats):
    times, values = {}, {}
    for key, _, _, fn, _ in stats:
        start = time.perf_counter()
        values[key] = float(fn())
        times[key] = (time.perf_counter() - start) * 1e3
    return times, values


def cdwqc_pass(binary, path):
    done = subprocess.run([binary, "--input", str(path), "--json"], stdout=subprocess.PIPE,
                          text=True, check=True)
    report = json.loads(done.stdout)
    rows = {row["name"]: row for row in report["statistics"]}
    return report, {k: r["ms"] for k, r in rows.items()}, {k: r["value"] for k, r in rows.items()}


def spread(ratios):
    return f"{min(ratios):.1f}-{max(ratios):.1f}x"


def agree(a, b):
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
        return False
    return abs(a - b) <= TOLERANCE * max(abs(a), abs(b), 1e-300)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=200_000)
    parser.add_argument("--raters", type=int, default=5)
    parser.add_argument("--categories", type=int, default=5)
    parser.add_argument("--missing", type=float, default=0.2, help="share of missing cells")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=5, help="timed passes on each side")
    parser.add_argument("--binary", help="an already built bench_metrics example (skips cargo)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # in order with cargo's messages
    if args.raters < 2 or not 2 <= args.categories <= 127 or args.repeat < 1:
        parser.error("need at least 2 raters, 2 to 127 categories and 1 repetition")

    versions = require_libraries()
    binary = args.binary or build_binary()
    data = generate(args.subjects, args.raters, args.categories, args.missing, args.seed)
    stats = python_statistics(data, args.categories)

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "ratings.bin"
        write_ratings(path, data, args.categories)
        # Warm-up: imports and first calls in Python, page cache and binary on disk.
        python_pass(stats)
        cdwqc_pass(binary, path)
        py_runs, rs_runs, setup = [], [], []
        for _ in range(args.repeat):
            py_times, py_values = python_pass(stats)
            report, rs_times, rs_values = cdwqc_pass(binary, path)
            py_runs.append(py_times)
            rs_runs.append(rs_times)
            setup.append((report["read_ms"], report["matrix_ms"]))

    n_ratings = int((~np.isnan(data)).sum())
    assert report["ratings"] == n_ratings and report["subjects"] == args.subjects
    print(f"{n_ratings:,} ratings: {args.subjects:,} subjects x {args.raters} raters, "
          f"{args.categories} categories, {args.missing:.0%} of cells missing (seed {args.seed})")
    print(", ".join(f"{k} {v}" for k, v in versions.items()) + f"; cdwqc {binary}")
    print(f"{args.repeat} repetitions, Python and cdwqc alternating; medians shown\n")

    header = f"{'statistic':<40} {'Python call':<45} {'Python ms':>10} {'cdwqc ms':>9} " \
             f"{'ratio':>7} {'(min-max)':>14}  agree"
    print(header)
    print("-" * len(header))
    all_agree = True
    for key, label, call, _, _ in stats:
        py_ms = statistics.median(r[key] for r in py_runs)
        rs_ms = statistics.median(r[key] for r in rs_runs)
        ratios = [p[key] / r[key] for p, r in zip(py_runs, rs_runs)]
        ok = agree(py_values[key], rs_values.get(key))
        all_agree &= ok
        print(f"{label:<40} {call:<45} {py_ms:>10.2f} {rs_ms:>9.2f} "
              f"{statistics.median(ratios):>6.1f}x {spread(ratios):>14}  {'yes' if ok else 'NO'}")
        if not ok:
            print(f"    Python {py_values[key]!r} != cdwqc {rs_values.get(key)!r}")
    in_total = [key for key, *_, counted in stats if counted]
    totals = [(sum(p[k] for k in in_total), sum(r[k] for k in in_total))
              for p, r in zip(py_runs, rs_runs)]
    ratios = [p / r for p, r in totals]
    print("-" * len(header))
    print(f"{'total (all rows but the kernel-only one)':<86} "
          f"{statistics.median(p for p, _ in totals):>10.2f} "
          f"{statistics.median(r for _, r in totals):>9.2f} "
          f"{statistics.median(ratios):>6.1f}x {spread(ratios):>14}")
    read_ms = statistics.median(s[0] for s in setup)
    matrix_ms = statistics.median(s[1] for s in setup)
    print(f"""
ratio = Python ms / cdwqc ms, per repetition, then the median. Values agree: equal to
{TOLERANCE:g} relative (last pass of each side).
Python times start from the subjects x raters float64 array in memory (NaN = missing;
generating it excluded) and include picking the rated pairs or the complete subjects and
whatever table the library builds (aggregate_raters' counts, krippendorff's value counts).
cdwqc times start from its checked Ratings matrix in memory, inside the example process
(process start, reading the file: {read_ms:.2f} ms, and checking the matrix: {matrix_ms:.2f} ms,
excluded) and include the pair table or subjects x categories count table each needs.
Both sides run on one thread.""")
    if not all_agree:
        sys.exit("values differ: the comparison is void")


if __name__ == "__main__":
    main()
