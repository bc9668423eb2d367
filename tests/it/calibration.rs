//! Temperature scaling and expected calibration error against numpy/scipy
//! (tests/data/calibration_reference.json, written by scripts/calibration_reference.py).

use std::path::Path;

use cdwqc::metrics::{apply_temperature, expected_calibration_error, fit_temperature};
use serde_json::Value;

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn temperature_and_ece_match_the_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/calibration_reference.json");
    let text = std::fs::read_to_string(&path).expect("reference file");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let p: Vec<Vec<f64>> = case["probabilities"]
            .as_array()
            .expect("rows")
            .iter()
            .map(numbers)
            .collect();
        let labels: Vec<usize> = case["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|v| v.as_u64().expect("label") as usize)
            .collect();
        let e = &case["expected"];
        let want = |key: &str| e[key].as_f64().expect(key);
        let t = fit_temperature(&p, &labels).expect("fit");
        assert!(
            (t.temperature - want("temperature")).abs() < 1e-6,
            "{name}: T {} vs {}",
            t.temperature,
            want("temperature")
        );
        assert!((t.nll_before - want("nll_before")).abs() < 1e-9, "{name}");
        assert!((t.nll_after - want("nll_after")).abs() < 1e-9, "{name}");
        assert!(t.nll_after <= t.nll_before);
        let before = expected_calibration_error(&p, &labels, 10).expect("ece");
        assert!(
            (before - want("ece_before")).abs() < 1e-9,
            "{name}: {before}"
        );
        // The reference calibrates with its own T: ECE after is compared with the
        // reference's calibrated probabilities, recomputed here.
        let calibrated: Vec<Vec<f64>> = p
            .iter()
            .map(|row| apply_temperature(row, want("temperature")))
            .collect();
        let after = expected_calibration_error(&calibrated, &labels, 10).expect("ece");
        assert!((after - want("ece_after")).abs() < 1e-9, "{name}: {after}");
        assert!(after < before, "{name}: calibration helps");
        for (g, w) in calibrated[0]
            .iter()
            .zip(numbers(&e["calibrated_first_row"]))
        {
            assert!((g - w).abs() < 1e-12, "{name}");
        }
    }
}
