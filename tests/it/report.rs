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

/// The agreement report's rater reliability and `ratings export --consensus
/// dawid-skene` give the library's Dawid-Skene fit of the same labels.
#[test]
fn dawid_skene_in_the_agreement_report_and_the_export() {
    use cdwqc::metrics::{DawidSkeneConfig, Ratings, dawid_skene};
    let tmp = store();
    let dir = tmp.path();
    // usable (0) / reject (1) of images 1-6 by ann, bob, cid, as in `store`.
    let rows = vec![
        vec![Some(0), Some(0), Some(0)],
        vec![Some(0), Some(0), Some(0)],
        vec![Some(1), Some(1), Some(1)],
        vec![Some(0), Some(0), Some(0)],
        vec![Some(0), Some(1), None],
        vec![Some(0), Some(0), None],
    ];
    let fit = dawid_skene(
        &Ratings::from_rows(&rows, 2).expect("ratings"),
        &DawidSkeneConfig::default(),
    )
    .expect("fit");
    let json: Value =
        serde_json::from_str(&ok(dir, &["report", "agreement", "--json"])).expect("json");
    let reliability = &json["tasks"][0]["reliability"];
    assert_eq!(reliability["method"], "dawid-skene");
    assert_eq!(reliability["iterations"], fit.iterations as u64);
    assert_eq!(reliability["converged"], true);
    let raters = reliability["raters"].as_array().expect("raters");
    assert_eq!(raters.len(), 3);
    assert_eq!(raters[2]["rater"], "cid");
    assert_eq!(raters[2]["ratings"], 4);
    let bob = &raters[1]["confusion"];
    let want = fit.confusion[1].as_ref().expect("bob");
    for t in 0..2 {
        for g in 0..2 {
            let got = bob[t][g].as_f64().expect("number");
            assert!((got - want[t][g]).abs() < 1e-12, "bob P({g}|{t}) {got}");
        }
    }
    assert!(
        (raters[1]["sensitivity"][0].as_f64().expect("sens") - want[0][0]).abs() < 1e-12,
        "sensitivity is the diagonal"
    );

    let md = ok(dir, &["report", "agreement"]);
    assert!(md.contains("### Rater reliability (Dawid-Skene)"), "{md}");
    assert!(md.contains("sensitivity usable"), "{md}");

    let csv = ok(
        dir,
        &[
            "ratings",
            "export",
            "--consensus",
            "dawid-skene",
            "--format",
            "csv",
        ],
    );
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    for column in [
        "usable_p_usable",
        "usable_p_reject",
        "usable_label",
        "quality_p_good",
        "quality_p_medium",
        "quality_p_bad",
        "quality_label",
        "gado_p_gado",
    ] {
        assert!(header.contains(&column), "{column} missing from {header:?}");
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 6);
    let at = |row: &[&str], column: &str| -> String {
        row[header.iter().position(|h| *h == column).expect("column")].to_string()
    };
    // Image ids follow the import's finishing order, not the path order: compare the
    // sorted posteriors of rejection.
    let mut got: Vec<f64> = rows
        .iter()
        .map(|r| at(r, "usable_p_reject").parse().expect("probability"))
        .collect();
    let mut want: Vec<f64> = fit
        .posteriors
        .iter()
        .map(|p| p.as_ref().expect("rated")[1])
        .collect();
    got.sort_by(f64::total_cmp);
    want.sort_by(f64::total_cmp);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
    }
    let rejected: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| at(r, "usable_label") == "reject")
        .collect();
    assert!(!rejected.is_empty());
    for r in rejected {
        assert_eq!(at(r, "quality_label"), "", "no quality for a reject");
    }

    // The ordinal variant changes the quality grade's fit only.
    let ordinal = ok(
        dir,
        &[
            "ratings",
            "export",
            "--consensus",
            "dawid-skene-ordinal",
            "--format",
            "csv",
        ],
    );
    let mut ordinal_lines = ordinal.lines();
    assert_eq!(
        ordinal_lines
            .next()
            .expect("header")
            .split(',')
            .collect::<Vec<_>>(),
        header
    );
    let ordinal_rows: Vec<Vec<&str>> = ordinal_lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(ordinal_rows.len(), rows.len());
    let mut quality_moved = false;
    for (plain, prior) in rows.iter().zip(&ordinal_rows) {
        for column in ["path", "usable_p_usable", "usable_p_reject", "usable_label"] {
            assert_eq!(at(plain, column), at(prior, column), "{column}");
        }
        let grade: Vec<f64> = ["quality_p_good", "quality_p_medium", "quality_p_bad"]
            .iter()
            .filter_map(|c| at(prior, c).parse().ok())
            .collect();
        if !grade.is_empty() {
            assert!((grade.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{grade:?}");
        }
        quality_moved |= at(plain, "quality_p_good") != at(prior, "quality_p_good");
    }
    assert!(
        quality_moved,
        "the ordinal prior changed no quality posterior"
    );
}
