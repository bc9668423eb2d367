//! `cdwqc sql`: every output format, saved queries, read-only by default, no file
//! access unless asked (tests/it/attacks.rs tries to break these).

use serde_json::Value;

use crate::support::{cdwqc, float_volume, ok, repo, stderr};

fn store_with_images() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = tmp.path().join("w/sub-02/anat");
    std::fs::create_dir_all(&w).expect("mkdir");
    std::fs::write(
        w.join("sub-02_FLAIR.nii"),
        float_volume([4, 4, 4], |i| i as f32),
    )
    .expect("write");
    std::fs::write(
        w.join("sub-02_T1w.nii"),
        float_volume([4, 4, 4], |i| i as f32 * 2.0),
    )
    .expect("write");
    std::fs::write(tmp.path().join("w/broken.nii"), b"nope").expect("write");
    ok(tmp.path(), &["init"]);
    ok(tmp.path(), &["import", "w"]);
    tmp
}

const Q: &str =
    "select suffix, count(*) as n from images where status = 'ok' group by all order by suffix";

#[test]
fn answers_in_every_format() {
    let tmp = store_with_images();
    let dir = tmp.path();
    assert_eq!(
        ok(dir, &["sql", Q, "--format", "csv"]),
        "suffix,n\nFLAIR,1\nT1w,1\n"
    );
    assert_eq!(
        ok(dir, &["sql", Q, "--format", "tsv"]),
        "suffix\tn\nFLAIR\t1\nT1w\t1\n"
    );
    let table = ok(dir, &["sql", Q, "--format", "table"]);
    assert!(table.starts_with("suffix  n\n"), "{table}");
    assert!(table.ends_with("(2 rows)\n"), "{table}");
    let json: Value =
        serde_json::from_str(&ok(dir, &["sql", Q, "--format", "json"])).expect("json");
    assert_eq!(json[1]["suffix"], "T1w");
    assert_eq!(json[1]["n"], 1);

    ok(
        dir,
        &["sql", Q, "--format", "parquet", "--out", "out.parquet"],
    );
    assert!(dir.join("out.parquet").is_file());
    let back = ok(
        dir,
        &[
            "sql",
            "select * from read_parquet('out.parquet') order by suffix",
            "--allow-files",
            "--format",
            "csv",
        ],
    );
    assert_eq!(back, "suffix,n\nFLAIR,1\nT1w,1\n");
    // 128-bit and unsigned 64-bit integers keep every digit (they were written as -1).
    ok(
        dir,
        &[
            "sql",
            "select 170141183460469231731687303715884105727::hugeint as h, \
             18446744073709551615::ubigint as u, -5::hugeint as small",
            "--format",
            "parquet",
            "--out",
            "wide.parquet",
        ],
    );
    let wide = ok(
        dir,
        &[
            "sql",
            "select h::varchar as h, u::varchar as u, small from read_parquet('wide.parquet')",
            "--allow-files",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        wide,
        "h,u,small\n170141183460469231731687303715884105727,18446744073709551615,-5\n"
    );
    ok(dir, &["sql", Q, "--format", "tsv", "--out", "out.tsv"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("out.tsv")).expect("read"),
        "suffix\tn\nFLAIR\t1\nT1w\t1\n"
    );
}

#[test]
fn saved_queries_run() {
    let tmp = store_with_images();
    let dir = tmp.path();
    let queries = repo().join("sql/queries");
    let mut n = 0;
    for entry in std::fs::read_dir(&queries).expect("sql/queries") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("--"),
            "{} starts with a comment saying what it answers",
            path.display()
        );
        let out = ok(
            dir,
            &["sql", "-f", path.to_str().expect("utf8"), "--format", "csv"],
        );
        assert!(out.lines().count() >= 1, "{}", path.display());
        n += 1;
    }
    assert!(n >= 2);
    let failures = ok(
        dir,
        &[
            "sql",
            "-f",
            queries.join("import_failures.sql").to_str().expect("utf8"),
            "--format",
            "csv",
        ],
    );
    assert!(failures.contains("broken.nii"), "{failures}");
}

#[test]
fn read_only_unless_write() {
    let tmp = store_with_images();
    let dir = tmp.path();
    let o = cdwqc(dir, &["sql", "insert into raters (name) values ('ann')"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("read-only") && err.contains("--write"),
        "{err}"
    );
    ok(
        dir,
        &["sql", "--write", "insert into raters (name) values ('ann')"],
    );
    assert_eq!(
        ok(dir, &["sql", "select name from raters", "--format", "csv"]),
        "name\nann\n"
    );
}

#[test]
fn sql_errors_and_file_access() {
    let tmp = store_with_images();
    let dir = tmp.path();
    let o = cdwqc(dir, &["sql", "select nonsense from images"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nonsense"), "{}", stderr(&o));

    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret.csv");
    std::fs::write(&secret, "a\n1\n").expect("write");
    let q = format!("select * from read_csv('{}')", secret.display());
    let o = cdwqc(dir, &["sql", &q]);
    assert!(
        !o.status.success(),
        "reading outside the project must be refused"
    );
    assert!(stderr(&o).contains("secret.csv"), "{}", stderr(&o));
    assert_eq!(
        ok(dir, &["sql", &q, "--allow-files", "--format", "csv"]),
        "a\n1\n"
    );
    // A session cannot lift the restriction itself.
    let o = cdwqc(dir, &["sql", "set enable_external_access = true"]);
    assert!(!o.status.success());
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let dir = store_with_images();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} sql 'select * from range(2000000)' --format csv | head -n 2",
            env!("CARGO_BIN_EXE_cdwqc")
        ))
        .current_dir(dir.path())
        .output()
        .expect("sh");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(printed, "range\n0\n");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        !errors.contains("panicked") && !errors.contains("Broken pipe"),
        "{errors}"
    );
    // The same for a generated script read only in part (bash's is larger than a pipe).
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} completions bash | head -c 10",
            env!("CARGO_BIN_EXE_cdwqc")
        ))
        .output()
        .expect("sh");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(!errors.contains("panicked"), "{errors}");
}

#[test]
fn every_type_duckdb_returns_is_read_or_refused_by_name() {
    // The duckdb crate panics on values it has no reader for (TIME_NS): the command
    // must name the column and say how to read it, never crash.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["init"]);
    let o = cdwqc(dir, &["sql", "select '10:00:00'::TIME_NS as t"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("column \"t\"") && err.contains("::VARCHAR"),
        "{err}"
    );
    // Every other type DuckDB's own test table holds is read, in every format.
    for format in ["table", "csv", "json"] {
        let o = cdwqc(
            dir,
            &[
                "sql",
                "select * exclude (time_ns) from test_all_types()",
                "--format",
                format,
            ],
        );
        assert!(o.status.success(), "{format}: {}", stderr(&o));
    }
    ok(dir, &["sql", "select '10:00:00'::TIME_NS::VARCHAR as t"]);
}

#[test]
fn a_transaction_left_open_is_an_error_not_a_silent_rollback() {
    // `Count 1` and success were printed, then the open transaction was rolled back
    // when the command ended.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["init"]);
    let o = cdwqc(
        dir,
        &[
            "sql",
            "--write",
            "begin; insert into raters (name) values ('zed')",
        ],
    );
    let err = crate::support::failure(&o);
    assert!(
        err.contains("did not end") && err.contains("nothing after BEGIN was saved"),
        "{err}"
    );
    assert!(!ok(dir, &["raters", "list"]).contains("zed"));
    ok(
        dir,
        &[
            "sql",
            "--write",
            "begin; insert into raters (name) values ('zed'); commit",
        ],
    );
    assert!(ok(dir, &["raters", "list"]).contains("zed"));
}
