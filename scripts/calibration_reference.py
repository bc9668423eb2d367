"""Reference values for cdwqc's calibration (src/metrics/calibration.rs).

Temperature scaling as in Guo et al. 2017: the temperature T that minimises the mean
negative log-likelihood of softmax(ln p / T), found here with scipy's bounded scalar
minimiser on T in [1e-3, 1e3] (xatol 1e-12); expected calibration error with 10
equal-width bins of the top-class confidence (bin min(floor(10 conf), 9)), before and
after. Inputs are seeded numpy draws of over- and under-confident classifiers (2 and 3
classes). Writes tests/data/calibration_reference.json.

Usage: .venv/bin/python scripts/calibration_reference.py [OUT.json]
"""
import json
import sys

import numpy as np
import scipy
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax

FLOOR = 1e-12
BINS = 10


def nll(probabilities, labels, temperature):
    z = np.log(np.maximum(probabilities, FLOOR)) / temperature
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(labels)), labels]))


def ece(probabilities, labels):
    top = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(labels)), top]
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    total = 0.0
    for b in range(BINS):
        inside = bins == b
        if inside.any():
            total += abs((top[inside] == labels[inside]).sum() - confidence[inside].sum())
    return float(total / len(labels))


def case(name, rng, n, k, sharpness):
    """Labels drawn from a calibrated model; the reported probabilities are that
    model's logits times `sharpness` (> 1 overconfident, < 1 underconfident)."""
    logits = rng.normal(0.0, 1.5, size=(n, k))
    truth_p = softmax(logits, axis=1)
    labels = np.array([rng.choice(k, p=row) for row in truth_p])
    reported = softmax(logits * sharpness, axis=1)
    fit = minimize_scalar(
        lambda t: nll(reported, labels, t),
        bounds=(1e-3, 1e3),
        method="bounded",
        options={"xatol": 1e-12, "maxiter": 10000},
    )
    t = float(fit.x)
    calibrated = softmax(np.log(np.maximum(reported, FLOOR)) / t, axis=1)
    return {
        "name": name,
        "probabilities": reported.tolist(),
        "labels": labels.tolist(),
        "expected": {
            "temperature": t,
            "nll_before": nll(reported, labels, 1.0),
            "nll_after": nll(reported, labels, t),
            "ece_before": ece(reported, labels),
            "ece_after": ece(calibrated, labels),
            "calibrated_first_row": calibrated[0].tolist(),
        },
    }


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/calibration_reference.json"
    rng = np.random.default_rng(20261128)
    cases = [
        case("binary_overconfident", rng, 300, 2, 2.5),
        case("binary_underconfident", rng, 300, 2, 0.5),
        case("three_class_overconfident", rng, 400, 3, 1.8),
    ]
    doc = {
        "format": "cdwqc.calibration_reference/1",
        "generator": "scripts/calibration_reference.py",
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__},
        "conventions": "logits = ln(max(p, 1e-12)); ECE: 10 equal-width bins of the "
        "top-class confidence, bin min(floor(10 conf), 9)",
        "cases": cases,
    }
    with open(out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    for c in cases:
        e = c["expected"]
        print(
            f"{c['name']}: T {e['temperature']:.6f}, NLL {e['nll_before']:.4f} -> "
            f"{e['nll_after']:.4f}, ECE {e['ece_before']:.4f} -> {e['ece_after']:.4f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
