//! Rating from the command line: queues, the line-mode loop, undo, and durability of a
//! save when the process is killed right after it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::support::{float_volume, ok};

fn store(n: usize) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for i in 0..n {
        let anat = tmp.path().join(format!("w/sub-{i:02}/anat"));
        std::fs::create_dir_all(&anat).expect("mkdir");
        std::fs::write(
            anat.join(format!("sub-{i:02}_FLAIR.nii")),
            float_volume([6, 6, 6], |v| (v * (i + 1)) as f32),
        )
        .expect("write");
    }
    ok(tmp.path(), &["init"]);
    ok(tmp.path(), &["import", "w"]);
    tmp
}

#[test]
fn queue_assigns_shared_images_to_every_rater() {
    let tmp = store(10);
    let dir = tmp.path();
    let out = ok(
        dir,
        &[
            "queue",
            "create",
            "--raters",
            "ann,bob,cid",
            "--sequence",
            "FLAIR",
            "--overlap",
            "0.2",
            "--seed",
            "7",
        ],
    );
    assert!(out.contains("10 images, 2 shared by all 3 raters"), "{out}");
    let shared = ok(
        dir,
        &[
            "sql",
            "select count(distinct image_id) from queue_items where shared",
            "--format",
            "csv",
        ],
    );
    assert_eq!(shared.lines().nth(1), Some("2"));
    let every = ok(
        dir,
        &[
            "sql",
            "select count(distinct image_id) from queue_items",
            "--format",
            "csv",
        ],
    );
    assert_eq!(every.lines().nth(1), Some("10"), "every image is assigned");
    let status = ok(dir, &["queue", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    let assigned: i64 = v
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["assigned"].as_i64().expect("n"))
        .sum();
    assert_eq!(assigned, 2 * 3 + 8);
}

#[test]
fn line_mode_saves_refuses_and_undoes() {
    let tmp = store(3);
    let dir = tmp.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(["rate", "--rater", "ann"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"kaz\nrk\nzz\nu\nr\nq\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("saved rating #1: kaz"), "{text}");
    assert!(text.contains("invalid code 'rk'"), "{text}");
    assert!(text.contains("withdrew rating #2"), "{text}");
    let latest = ok(
        dir,
        &[
            "sql",
            "select code from ratings_latest where rater = 'ann' order by image_id",
            "--format",
            "csv",
        ],
    );
    assert_eq!(latest, "code\nkaz\nr\n");
}

#[test]
fn a_rating_reported_saved_survives_sigkill() {
    let tmp = store(3);
    let dir = tmp.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(["rate", "--rater", "ann"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    stdin.write_all(b"aa\n").expect("write");
    stdin.flush().expect("flush");
    let mut saved_id = None;
    let mut line = String::new();
    while reader.read_line(&mut line).expect("read") > 0 {
        if let Some(rest) = line.split("saved rating #").nth(1) {
            saved_id = rest.split(':').next().map(str::to_string);
            break;
        }
        line.clear();
    }
    let id = saved_id.expect("the loop reported a save");
    // Killed at once, without a chance to flush or close anything.
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let stored = ok(
        dir,
        &[
            "sql",
            &format!("select code from ratings where rating_id = {id}"),
            "--format",
            "csv",
        ],
    );
    assert_eq!(stored, "code\naa\n");
}

#[test]
fn notebook_import_then_export_gives_the_same_codes() {
    let tmp = store(4);
    let dir = tmp.path();
    let input = "index\timg_id\tcode\tlabel\n0\tsub-00_FLAIR\tkaz\t2\n1\tsub-01_FLAIR\tr\t4\n2\tsub-02_FLAIR\t\t1\n3\tsub-03_FLAIR\tzzd\t3\n";
    std::fs::write(dir.join("nb.tsv"), input).expect("write");
    ok(dir, &["ratings", "import", "nb.tsv", "--rater", "ann"]);
    let out = ok(dir, &["ratings", "export", "--notebook", "--rater", "ann"]);
    assert_eq!(out, input);
    ok(
        dir,
        &[
            "ratings",
            "export",
            "--consensus",
            "--format",
            "parquet",
            "--out",
            "c.parquet",
        ],
    );
    let n = ok(
        dir,
        &[
            "sql",
            "select count(*) from read_parquet('c.parquet') where usable_decision = 'majority'",
            "--allow-files",
            "--format",
            "csv",
        ],
    );
    assert_eq!(n.lines().nth(1), Some("4"));
}
