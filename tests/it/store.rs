//! The store seen from the command line: creation, the single-writer rule.

use crate::support::{cdwqc, ok, stderr};

#[test]
fn init_creates_then_reopens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = ok(tmp.path(), &["init"]);
    assert!(out.starts_with("created cdwqc.duckdb"), "{out}");
    let out = ok(tmp.path(), &["--db", "cdwqc.duckdb", "init"]);
    assert!(out.starts_with("opened"), "{out}");
    let o = cdwqc(tmp.path(), &["--db", "nowhere/x.duckdb", "init"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nowhere"), "{}", stderr(&o));
}

#[test]
fn a_second_writer_gets_a_clear_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    ok(tmp.path(), &["init"]);
    let path = tmp.path().join("cdwqc.duckdb");
    let holder = cdwqc::store::Store::open(&path, cdwqc::store::Access::ReadWrite).expect("open");
    std::fs::create_dir_all(tmp.path().join("w")).expect("mkdir");
    let o = cdwqc(tmp.path(), &["import", "w"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains("cdwqc.duckdb"), "{err}");
    drop(holder);
    ok(tmp.path(), &["import", "w"]);
}
