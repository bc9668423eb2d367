//! `cdwqc report agreement` on a store with three raters: Markdown, JSON and HTML, and
//! numbers equal to the metrics computed directly on the same tables.

use serde_json::Value;

use cdwqc::metrics::{ContingencyTable, Weighting, cohen_kappa};

use crate::support::{float_volume, ok};

/// Six images; ann and bob rate all, cid rates four; one quality disagreement.
fn store() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for i in 0..6 {
        let anat = dir.join(format!("w/sub-{i}/anat"));
        std::fs::create_dir_all(&anat).expect("mkdir");
        std::fs::write(
            anat.join(format!("sub-{i}_FLAIR.nii")),
            float_volume([3, 3, 3], |v| (v + i) as f32),
        )
        .expect("write");
    }
    ok(dir, &["init"]);
    ok(dir, &["import", "w"]);
    for r in ["ann", "bob", "cid"] {
        ok(dir, &["raters", "add", r]);
    }
    // (image, rater, usable, motion)
    let rows = [
        (1, "ann", true, 0),
        (1, "bob", true, 0),
        (1, "cid", true, 0),
        (2, "ann", true, 1),
        (2, "bob", true, 1),
        (2, "cid", true, 2),
        (3, "ann", false, 0),
        (3, "bob", false, 0),
        (3, "cid", false, 0),
        (4, "ann", true, 2),
        (4, "bob", true, 2),
        (4, "cid", true, 2),
        (5, "ann", true, 0),
        (5, "bob", false, 0),
        (6, "ann", true, 1),
        (6, "bob", true, 0),
    ];
    let values: Vec<String> = rows
        .iter()
        .map(|(i, r, u, m)| format!("({i}, '{r}', {u}, false, {m}, 0, 0, '', '1', 'test')"))
        .collect();
    ok(
        dir,
        &[
            "sql",
            "--write",
            &format!(
                "insert into ratings (image_id, rater, usable, gado, motion, contrast, noise, code, protocol_version, source) values {}",
                values.join(", ")
            ),
        ],
    );
    tmp
}

#[test]
fn agreement_report_in_three_formats() {
    let tmp = store();
    let dir = tmp.path();
    let json: Value =
        serde_json::from_str(&ok(dir, &["report", "agreement", "--json"])).expect("json");
    assert_eq!(json["schema"], "cdwqc.agreement/1");
    assert_eq!(json["raters"], serde_json::json!(["ann", "bob", "cid"]));
    let usable = &json["tasks"][0];
    assert_eq!(usable["task"], "usable");
    assert_eq!(usable["pairs"].as_array().expect("pairs").len(), 3);
    let ann_bob = &usable["pairs"][0];
    assert_eq!(
        (ann_bob["rater_a"].as_str(), ann_bob["rater_b"].as_str()),
        (Some("ann"), Some("bob"))
    );
    assert_eq!(ann_bob["n"], 6);
    // usable/reject: ann rejects image 3; bob rejects 3 and 5.
    let table = ContingencyTable::from_rows(&[vec![4, 1], vec![0, 1]]).expect("table");
    let expected = cohen_kappa(&table, Weighting::Unweighted).expect("defined");
    let got = ann_bob["kappa"]["value"].as_f64().expect("kappa");
    assert!(
        (got - expected.kappa).abs() < 1e-12,
        "{got} vs {}",
        expected.kappa
    );
    assert_eq!(ann_bob["confusion"], serde_json::json!([[4, 1], [0, 1]]));
    // quality is quadratic-weighted and only counts usable images.
    let quality = &json["tasks"][1];
    assert_eq!(quality["kappa_weighting"], "quadratic");
    assert_eq!(quality["pairs"][0]["n"], 4);
    // gado: everyone said no, kappa is undefined with its reason.
    let gado = &json["tasks"][2]["pairs"][0]["kappa"];
    assert!(gado["value"].is_null());
    assert!(
        gado["undefined"]
            .as_str()
            .expect("reason")
            .contains("single category")
    );

    let md = ok(dir, &["report", "agreement", "--html", "agreement.html"]);
    assert!(md.starts_with("# Inter-rater agreement"));
    assert!(md.contains("| ann | bob | 6 |"), "{md}");
    let html = std::fs::read_to_string(dir.join("agreement.html")).expect("html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.matches("<svg").count() >= 9,
        "confusion, kappa and balance plots per task"
    );
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "self-contained, no network"
    );

    let only: Value = serde_json::from_str(&ok(
        dir,
        &["report", "agreement", "--json", "--raters", "ann,cid"],
    ))
    .expect("json");
    assert_eq!(
        only["tasks"][0]["pairs"].as_array().expect("pairs").len(),
        1
    );
}
