//! An import stopped by Ctrl-C (SIGINT) or killed (SIGKILL) leaves a consistent store,
//! and the next import finishes the job.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{external, ok};

fn warehouse(dir: &Path, n: usize) {
    let t1 =
        std::fs::read(external("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).expect("read");
    for i in 0..n {
        let anat = dir.join(format!("w/sub-{i:03}/anat"));
        std::fs::create_dir_all(&anat).expect("mkdir");
        std::fs::write(anat.join(format!("sub-{i:03}_T1w.nii.gz")), &t1).expect("write");
    }
}

fn interrupted_then_resumed(signal: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let n = 30;
    warehouse(dir, n);
    ok(dir, &["init"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(["import", "w", "--json"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Past process start-up (libtorch is loaded before main runs), into the import.
    std::thread::sleep(Duration::from_millis(2500));
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success() || child.try_wait().expect("wait").is_some());
    let status = child.wait().expect("wait");
    if signal == "-INT" {
        // Either it finished before the signal, or it stopped cleanly with 130.
        assert!(status.success() || status.code() == Some(130), "{status:?}");
    }
    let stored: Value = serde_json::from_str(&ok(
        dir,
        &["sql", "select count(*) as n, count(*) filter (where status = 'ok') as ok, (select count(*) from previews) as previews from images", "--format", "json"],
    ))
    .expect("json");
    let done = stored[0]["n"].as_u64().expect("n");
    assert_eq!(
        stored[0]["ok"].as_u64(),
        Some(done),
        "every stored row is complete"
    );
    assert_eq!(
        stored[0]["previews"].as_u64(),
        Some(3 * done),
        "rows and previews committed together"
    );
    let resumed: Value = serde_json::from_str(&ok(dir, &["import", "w", "--json"])).expect("json");
    assert_eq!(
        resumed["added"].as_u64(),
        Some(n as u64 - done),
        "{resumed}"
    );
    assert_eq!(resumed["unchanged"].as_u64(), Some(done));
    assert_eq!(resumed["failed"], 0);
    let total = ok(
        dir,
        &[
            "sql",
            "select count(*) from images where status = 'ok'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(total, format!("count_star()\n{n}\n"));
}

#[test]
fn ctrl_c_commits_and_the_next_import_resumes() {
    interrupted_then_resumed("-INT");
}

#[test]
fn sigkill_leaves_a_consistent_store() {
    interrupted_then_resumed("-KILL");
}
