//! Dawid-Skene latent truth against crowd-kit's `DawidSkene` (tests/data/
//! dawid_skene_reference.json, written by scripts/dawid_skene_reference.py): the same
//! posteriors, priors, confusion matrices, iterations and losses to 1e-6, and on
//! simulated raters the known confusion matrices recovered.

use std::path::Path;

use cdwqc::metrics::{DawidSkene, DawidSkeneConfig, Ratings, dawid_skene};
use serde_json::Value;

const TOLERANCE: f64 = 1e-6;

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dawid_skene_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reference {} missing: {e}", path.display()));
    serde_json::from_str(&text).expect("reference is valid JSON")
}

fn ratings(case: &Value) -> Ratings {
    let k = case["categories"].as_array().expect("categories").len();
    let rows: Vec<Vec<Option<usize>>> = case["ratings"]
        .as_array()
        .expect("ratings")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|c| c.as_u64().map(|c| c as usize))
                .collect()
        })
        .collect();
    Ratings::from_rows(&rows, k).expect("ratings matrix")
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOLERANCE,
        "{what}: cdwqc {got}, crowd-kit {want}"
    );
}

fn fit(case: &Value) -> DawidSkene {
    dawid_skene(&ratings(case), &DawidSkeneConfig::default()).expect("fit")
}

#[test]
fn dawid_skene_matches_crowd_kit() {
    let doc = reference();
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let expected = &case["expected"];
        let ds = fit(case);
        assert_eq!(
            ds.iterations as u64,
            expected["iterations"].as_u64().expect("iterations"),
            "{name}: iterations"
        );
        assert!(ds.converged, "{name}: converged");
        for (i, (got, want)) in ds
            .loss_history
            .iter()
            .zip(numbers(&expected["loss_history"]))
            .enumerate()
        {
            close(&format!("{name}: loss {i}"), *got, want);
        }
        for (c, (got, want)) in ds
            .priors
            .iter()
            .zip(numbers(&expected["priors"]))
            .enumerate()
        {
            close(&format!("{name}: prior {c}"), *got, want);
        }
        let posteriors = expected["posteriors"].as_array().expect("posteriors");
        assert_eq!(ds.posteriors.len(), posteriors.len(), "{name}");
        for (s, (got, want)) in ds.posteriors.iter().zip(posteriors).enumerate() {
            match got {
                None => assert!(want.is_null(), "{name}: subject {s} has a posterior there"),
                Some(p) => {
                    for (c, (g, w)) in p.iter().zip(numbers(want)).enumerate() {
                        close(&format!("{name}: subject {s} class {c}"), *g, w);
                    }
                }
            }
        }
        let confusion = expected["confusion"].as_array().expect("confusion");
        for (r, (got, want)) in ds.confusion.iter().zip(confusion).enumerate() {
            let got = got.as_ref().expect("every rater rated");
            for (t, (row, want_row)) in got.iter().zip(want.as_array().expect("rows")).enumerate() {
                for (g, (v, w)) in row.iter().zip(numbers(want_row)).enumerate() {
                    close(&format!("{name}: rater {r} P({g}|{t})"), *v, w);
                }
            }
        }
    }
}

/// Simulated raters (1,500 images, 5 raters, each image rated by each rater with
/// probability 0.6): every entry of every estimated confusion matrix lies within 0.08
/// of the true one (the largest error is 0.068), the class shares within 0.05, and the
/// hard labels are right more often than majority vote.
#[test]
fn dawid_skene_recovers_known_confusion_matrices() {
    let doc = reference();
    let case = doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == "simulated")
        .expect("simulated case");
    let ds = fit(case);
    let true_confusion = case["true_confusion"].as_array().expect("true");
    let mut largest: f64 = 0.0;
    for (r, truth) in true_confusion.iter().enumerate() {
        let got = ds.confusion[r].as_ref().expect("rated");
        for (t, row) in truth.as_array().expect("rows").iter().enumerate() {
            for (g, w) in numbers(row).into_iter().enumerate() {
                largest = largest.max((got[t][g] - w).abs());
            }
        }
    }
    assert!(largest < 0.08, "largest confusion error {largest}");
    let truth: Vec<usize> = case["truth"]
        .as_array()
        .expect("truth")
        .iter()
        .map(|t| t.as_u64().expect("class") as usize)
        .collect();
    // The estimated class shares against the true shares of the rated images (the
    // largest difference is 0.048, for class 1).
    let rated_truth: Vec<usize> = truth
        .iter()
        .enumerate()
        .filter(|(s, _)| ds.posteriors[*s].is_some())
        .map(|(_, t)| *t)
        .collect();
    for (c, got) in ds.priors.iter().enumerate() {
        let share =
            rated_truth.iter().filter(|t| **t == c).count() as f64 / rated_truth.len() as f64;
        assert!((got - share).abs() < 0.05, "prior of {c}: {got} vs {share}");
    }
    let matrix = ratings(case);
    let (mut ds_right, mut vote_right, mut rated) = (0, 0, 0);
    for (s, &t) in truth.iter().enumerate() {
        let Some(label) = ds.hard_label(s) else {
            continue;
        };
        rated += 1;
        ds_right += usize::from(label == t);
        let mut counts = [0usize; 3];
        for c in matrix.subject(s).iter().flatten() {
            counts[*c] += 1;
        }
        let top = *counts.iter().max().expect("counts");
        // A tie counts as wrong for majority vote: it cannot decide.
        let winners: Vec<usize> = (0..3).filter(|&c| counts[c] == top).collect();
        vote_right += usize::from(winners == [t]);
    }
    assert!(rated > 1400);
    assert!(
        ds_right > vote_right,
        "Dawid-Skene {ds_right} right, majority vote {vote_right} of {rated}"
    );
}
