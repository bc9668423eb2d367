"""Reference values for cdwqc's Dawid-Skene latent truth (src/metrics/dawid_skene.rs).

Runs crowd-kit's `DawidSkene` (majority-vote start, 100 iterations at most, stops when
the evidence lower bound per rating gains less than 1e-5: crowd-kit's defaults, which
cdwqc uses) on:
  - two small public rating sets with missing ratings, shipped inside the irrCAC wheel
    (`irrCAC.datasets.raw_4raters` and `raw_5observers`, from Gwet's Handbook of
    Inter-Rater Reliability);
  - simulated raters whose confusion matrices are known: truth drawn from a prior,
    each rater rates each image with some probability and answers from its row of the
    confusion matrix (numpy, fixed seed).
and writes the ratings, the posteriors, priors, confusion matrices, iterations and
loss history as JSON (tests/data/dawid_skene_reference.json).

Installs crowd-kit and irrCAC into the running interpreter when missing (irrCAC with
--no-deps: it pins old numpy/scipy, and only its pandas data sets are read).

Usage: .venv/bin/python scripts/dawid_skene_reference.py [OUT.json]
"""
import importlib.util
import json
import subprocess
import sys

VERSIONS = {"crowd-kit": "1.4.2", "irrCAC": "0.4.4"}


def ensure_installed():
    if importlib.util.find_spec("crowdkit") is None:
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", f"crowd-kit=={VERSIONS['crowd-kit']}"]
        )
    if importlib.util.find_spec("irrCAC") is None:
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "--no-deps", f"irrCAC=={VERSIONS['irrCAC']}"]
        )


ensure_installed()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from crowdkit.aggregation import DawidSkene  # noqa: E402
import irrCAC.datasets  # noqa: E402

N_ITER = 100
TOL = 1e-5


def as_cells(frame):
    """A subjects x raters frame of category values -> category indices (None missing)."""
    values = frame.to_numpy(dtype=object)
    present = sorted({v for v in values.ravel() if not pd.isna(v)})
    index = {v: i for i, v in enumerate(present)}
    cells = [[None if pd.isna(v) else index[v] for v in row] for row in values]
    return cells, [str(v) for v in present]


def fit(cells, n_categories):
    rows = [
        (s, r, c)
        for s, row in enumerate(cells)
        for r, c in enumerate(row)
        if c is not None
    ]
    data = pd.DataFrame(rows, columns=["task", "worker", "label"])
    ds = DawidSkene(n_iter=N_ITER, tol=TOL).fit(data)
    classes = list(range(n_categories))
    probas = ds.probas_.reindex(columns=classes)
    posteriors = [
        probas.loc[s].tolist() if s in probas.index else None for s in range(len(cells))
    ]
    n_raters = len(cells[0])
    confusion = []
    for r in range(n_raters):
        if r not in ds.errors_.index.get_level_values("worker"):
            confusion.append(None)
            continue
        given = ds.errors_.loc[r].reindex(index=classes, columns=classes).fillna(0.0)
        # rows: true class, columns: given class
        confusion.append(given.T.to_numpy().tolist())
    return {
        "posteriors": posteriors,
        "priors": ds.priors_.reindex(classes).tolist(),
        "confusion": confusion,
        "iterations": len(ds.loss_history_),
        "loss_history": list(ds.loss_history_),
    }


def simulated(seed=20261128, n_images=1500, rate_probability=0.6):
    rng = np.random.default_rng(seed)
    prior = np.array([0.5, 0.3, 0.2])
    true_confusion = [
        [[0.90, 0.08, 0.02], [0.10, 0.80, 0.10], [0.05, 0.15, 0.80]],
        [[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.10, 0.20, 0.70]],
        [[0.95, 0.05, 0.00], [0.05, 0.90, 0.05], [0.00, 0.10, 0.90]],
        [[0.60, 0.30, 0.10], [0.30, 0.50, 0.20], [0.10, 0.30, 0.60]],
        [[0.85, 0.10, 0.05], [0.15, 0.75, 0.10], [0.05, 0.05, 0.90]],
    ]
    truth = rng.choice(3, size=n_images, p=prior)
    cells = []
    for t in truth:
        row = []
        for m in true_confusion:
            if rng.random() < rate_probability:
                row.append(int(rng.choice(3, p=m[t])))
            else:
                row.append(None)
        cells.append(row)
    return cells, truth.tolist(), prior.tolist(), true_confusion, seed


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/dawid_skene_reference.json"
    cases = []
    for name in ["raw_4raters", "raw_5observers"]:
        frame = getattr(irrCAC.datasets, name)()
        cells, categories = as_cells(frame)
        cases.append(
            {
                "name": f"irrCAC.datasets.{name}",
                "description": f"{frame.shape[0]} units x {frame.shape[1]} raters, "
                "missing ratings; from Gwet's Handbook of Inter-Rater Reliability, "
                "shipped in the irrCAC wheel",
                "categories": categories,
                "ratings": cells,
                "expected": fit(cells, len(categories)),
            }
        )
    cells, truth, prior, true_confusion, seed = simulated()
    expected = fit(cells, 3)
    error = max(
        abs(expected["confusion"][r][t][g] - true_confusion[r][t][g])
        for r in range(len(true_confusion))
        for t in range(3)
        for g in range(3)
    )
    print(f"simulated: largest |estimated - true| confusion entry {error:.4f}", file=sys.stderr)
    cases.append(
        {
            "name": "simulated",
            "description": "1,500 images, 5 raters with known confusion matrices, "
            f"each rating an image with probability 0.6 (numpy default_rng({seed}))",
            "categories": ["0", "1", "2"],
            "ratings": cells,
            "truth": truth,
            "true_prior": prior,
            "true_confusion": true_confusion,
            "expected": expected,
        }
    )
    doc = {
        "format": "cdwqc.dawid_skene_reference/1",
        "generator": "scripts/dawid_skene_reference.py",
        "reference": f"crowd-kit {VERSIONS['crowd-kit']} DawidSkene(n_iter={N_ITER}, tol={TOL})",
        "versions": {
            "crowd-kit": importlib.metadata.version("crowd-kit"),
            "irrCAC": importlib.metadata.version("irrCAC"),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": sys.version.split()[0],
        },
        "conventions": "confusion[rater][true][given] = P(given | true); "
        "posteriors null for unrated subjects, confusion null for raters without ratings",
        "cases": cases,
    }
    with open(out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    import importlib.metadata

    main()
