//! Sharded import: shards analysing their share of a folder without the store
//! (`cdwqc slurm submit import --local`, or `cdwqc import --shard K/N` by hand) and one
//! merge leave the store exactly as one `cdwqc import` does (rows, previews, quality
//! metrics, failures, vanished files); a merge refuses missing or altered parts and
//! writes nothing then; merging twice writes nothing; files the store changed after the
//! list was frozen are left as stored.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use cdwqc::cluster::Shard;
use cdwqc::cluster::import::{IMPORT_LIST, ImportWorkList, merge_import, run_import_shard};
use cdwqc::import::ImportOptions;
use cdwqc::store::{Access, Store};

use crate::support::{assert_summaries_exact, cdwqc, ok, stderr, stdout};

/// A tiny synthetic warehouse in `dir/wh`, with one file that is not NIfTI.
fn warehouse(dir: &Path) {
    ok(
        dir,
        &[
            "synth", "--out", "wh", "--t1", "6", "--flair", "8", "--other", "2", "--grid", "tiny",
            "--seed", "3",
        ],
    );
    std::fs::write(
        dir.join("wh/sub-0001/ses-01/anat/sub-0001_ses-01_acq-junk_FLAIR.nii.gz"),
        b"junk",
    )
    .expect("write a bad file");
}

/// Everything an import writes, without ids, times and the rating and prediction
/// summaries: image rows, previews and quality metrics, each row as text, sorted.
pub(crate) fn contents(db: &Path) -> Vec<String> {
    let store = Store::open(db, Access::ReadOnly).expect("open the store");
    let mut lines = Vec::new();
    for sql in [
        "SELECT * EXCLUDE (image_id, first_seen, updated_at, raters_in_force, raters_usable,
                           raters_reject, usable_prediction)
         FROM images",
        "SELECT i.path, p.* EXCLUDE (image_id) FROM previews p JOIN images i USING (image_id)",
        "SELECT i.path, q.* EXCLUDE (image_id, computed_at, seconds)
         FROM iqms q JOIN images i USING (image_id)",
    ] {
        let mut stmt = store.conn().prepare(sql).expect("prepare");
        let mut rows = stmt.query([]).expect("query");
        while let Some(row) = rows.next().expect("row") {
            let n = row.as_ref().column_count();
            let cells: Vec<String> = (0..n)
                .map(|k| format!("{:?}", row.get::<_, duckdb::types::Value>(k).expect("cell")))
                .collect();
            lines.push(cells.join(" | "));
        }
    }
    lines.sort();
    lines
}

fn count(db: &Path, table: &str) -> i64 {
    let store = Store::open(db, Access::ReadOnly).expect("open the store");
    store
        .conn()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

fn assert_same_store(dir: &Path, got: &str, want: &str) {
    let (got_rows, want_rows) = (contents(&dir.join(got)), contents(&dir.join(want)));
    assert!(want_rows.len() > 40, "{} rows in {want}", want_rows.len());
    assert!(
        want_rows.iter().any(|l| l.contains("Text(\"failed\")")),
        "the bad file must be in {want}"
    );
    for (g, w) in got_rows.iter().zip(&want_rows) {
        assert_eq!(g, w, "{got} differs from {want}");
    }
    assert_eq!(got_rows.len(), want_rows.len(), "{got} vs {want}");
}

#[test]
fn sharded_import_stores_what_one_import_does_and_merges_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    warehouse(dir);
    ok(dir, &["--db", "plain.duckdb", "init"]);
    ok(dir, &["--db", "plain.duckdb", "import", "wh"]);
    ok(dir, &["--db", "shard.duckdb", "init"]);
    let out = ok(
        dir,
        &[
            "--db",
            "shard.duckdb",
            "slurm",
            "submit",
            "import",
            "wh",
            "--shards",
            "3",
            "--dir",
            "jobs/first",
            "--local",
            "--cpus-per-task",
            "1",
        ],
    );
    assert!(out.contains("in 3 shards"), "{out}");
    assert!(out.contains("1 failed"), "{out}");
    assert_same_store(dir, "shard.duckdb", "plain.duckdb");
    assert_summaries_exact(dir, "shard.duckdb");
    let again = ok(dir, &["--db", "shard.duckdb", "merge", "jobs/first"]);
    assert!(again.contains("nothing written"), "{again}");
    assert_same_store(dir, "shard.duckdb", "plain.duckdb");
    // A FIFO planted as a shard's manifest or part is refused at once, not waited on
    // while the merge holds the store.
    for suffix in [".json", ".parquet"] {
        let planted = std::fs::read_dir(dir.join("jobs/first"))
            .expect("job folder")
            .map(|e| e.expect("entry").path())
            .find(|p| {
                let name = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                name.starts_with("import-part-") && name.ends_with(suffix)
            })
            .expect("a shard file");
        let kept = planted.with_extension("kept");
        std::fs::rename(&planted, &kept).expect("move aside");
        let name = std::ffi::CString::new(planted.as_os_str().as_encoded_bytes()).expect("c");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let o = cdwqc(dir, &["--db", "shard.duckdb", "merge", "jobs/first"]);
        assert!(!o.status.success(), "{suffix}: {}", stdout(&o));
        let shown = format!("{}{}", stdout(&o), stderr(&o));
        assert!(shown.contains("not a regular file"), "{suffix}: {shown}");
        std::fs::remove_file(&planted).expect("rm fifo");
        std::fs::rename(&kept, &planted).expect("put back");
    }
    assert_same_store(dir, "shard.duckdb", "plain.duckdb");
    // A value the Slurm scripts cannot hold is refused before the job folder is made.
    let o = cdwqc(
        dir,
        &[
            "--db",
            "shard.duckdb",
            "slurm",
            "submit",
            "import",
            "wh",
            "--shards",
            "2",
            "--partition",
            "gpu\ntouch PWNED",
            "--dir",
            "jobs/bad",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot hold it"), "{}", stderr(&o));
    assert!(!dir.join("jobs/bad").exists());

    // The next round: a changed file, a touched one (same bytes, new time), a vanished
    // one, and a new one. Only those are analysed, and the store ends as a plain
    // re-import leaves it.
    let anat = dir.join("wh/sub-0002/ses-01/anat");
    let mut files: Vec<_> = std::fs::read_dir(&anat)
        .expect("anat")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let other = std::fs::read_dir(dir.join("wh/sub-0003/ses-01/anat"))
        .expect("anat")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .expect("a file");
    std::fs::copy(&other, &files[0]).expect("change a file");
    let bytes = std::fs::read(&files[1]).expect("read");
    std::fs::write(&files[1], bytes).expect("touch a file");
    std::fs::remove_file(dir.join("wh/sub-0001/ses-01/anat/sub-0001_ses-01_acq-junk_FLAIR.nii.gz"))
        .expect("remove");
    std::fs::copy(&other, anat.join("sub-0002_ses-01_acq-new_T2w.nii.gz")).expect("a new file");
    ok(dir, &["--db", "plain.duckdb", "import", "wh"]);
    let out = ok(
        dir,
        &[
            "--db",
            "shard.duckdb",
            "slurm",
            "submit",
            "import",
            "wh",
            "--shards",
            "2",
            "--dir",
            "jobs/second",
            "--local",
        ],
    );
    assert!(out.contains("3 of "), "three files to analyse: {out}");
    assert!(
        out.contains("1 new, 1 changed, 0 failed, 1 touched"),
        "{out}"
    );
    assert!(out.contains("1 missing"), "{out}");
    let (got, want) = (
        contents(&dir.join("shard.duckdb")),
        contents(&dir.join("plain.duckdb")),
    );
    assert_eq!(got, want);
    assert!(want.iter().any(|l| l.contains("Text(\"missing\")")));
    assert_summaries_exact(dir, "shard.duckdb");
}

#[test]
fn a_merge_names_missing_or_altered_parts_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    warehouse(dir);
    ok(dir, &["--db", "plain.duckdb", "init"]);
    ok(dir, &["--db", "plain.duckdb", "import", "wh"]);
    ok(dir, &["--db", "shard.duckdb", "init"]);
    ok(
        dir,
        &[
            "--db",
            "shard.duckdb",
            "slurm",
            "submit",
            "import",
            "wh",
            "--shards",
            "3",
            "--dir",
            "jobs",
            "--local",
        ],
    );
    // The list was frozen against an empty store: it merges into any empty store.
    ok(dir, &["--db", "fresh.duckdb", "init"]);
    let merge_fails = |contains: &[&str]| {
        let out = cdwqc(dir, &["--db", "fresh.duckdb", "merge", "jobs"]);
        assert!(!out.status.success(), "merge succeeded: {}", stdout(&out));
        for text in contains {
            assert!(
                stderr(&out).contains(text),
                "{text:?} not in\n{}",
                stderr(&out)
            );
        }
        assert_eq!(count(&dir.join("fresh.duckdb"), "images"), 0);
        assert_eq!(count(&dir.join("fresh.duckdb"), "iqms"), 0);
    };
    let part = dir.join("jobs/import-part-00001-of-00003.parquet");
    let manifest = dir.join("jobs/import-part-00001-of-00003.json");
    let kept = std::fs::read(&part).expect("part");
    std::fs::remove_file(&part).expect("remove");
    merge_fails(&["shard 1/3", "import-part-00001-of-00003.parquet is missing"]);
    let mut altered = kept.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0xff;
    std::fs::write(&part, &altered).expect("alter");
    merge_fails(&["shard 1/3", "SHA-256"]);
    std::fs::remove_file(&manifest).expect("remove");
    std::fs::remove_file(&part).expect("remove");
    merge_fails(&["shard 1/3: missing", "run the shard again"]);

    // The shard run again by hand, as a Slurm array task would: the merge then takes it.
    let rerun = ok(
        dir,
        &[
            "import",
            "--shard",
            "1/3",
            "--work-list",
            "jobs/import-list.parquet",
        ],
    );
    assert!(rerun.contains("import shard 1/3"), "{rerun}");
    let out = ok(dir, &["--db", "fresh.duckdb", "merge", "jobs"]);
    assert!(out.contains("rows written in one transaction"), "{out}");
    assert_same_store(dir, "fresh.duckdb", "plain.duckdb");

    // A shard count other than the list's is refused by the worker.
    let wrong = cdwqc(
        dir,
        &[
            "import",
            "--shard",
            "1/2",
            "--work-list",
            "jobs/import-list.parquet",
        ],
    );
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("frozen for 3 shards"),
        "{}",
        stderr(&wrong)
    );
}

#[test]
fn files_the_store_changed_after_the_list_was_frozen_are_left_as_stored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    warehouse(dir);
    let db = dir.join("cdwqc.duckdb");
    ok(dir, &["init"]);
    let opts = ImportOptions {
        root: dir.join("wh"),
        include_derivatives: false,
        force: false,
        progress: false,
        iqm: true,
    };
    let jobs = dir.join("jobs");
    {
        let store = Store::open(&db, Access::ReadOnly).expect("open");
        let (plan, known) =
            cdwqc::import::plan(&opts, |root| store.known_files(root)).expect("plan");
        ImportWorkList::new(&plan, &known, &opts, 2, &db)
            .write(&jobs.join(IMPORT_LIST))
            .expect("write the list");
    }
    let cancel = AtomicBool::new(false);
    for index in 0..2 {
        run_import_shard(&jobs.join(IMPORT_LIST), Shard { index, count: 2 }, &cancel)
            .expect("shard");
    }
    // Meanwhile a plain import indexes the same folder, and one file changes and is
    // indexed again: the merge must not put the frozen version back.
    ok(dir, &["import", "wh"]);
    let anat = dir.join("wh/sub-0002/ses-01/anat");
    let changed = std::fs::read_dir(&anat)
        .expect("anat")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .expect("a file");
    std::fs::write(&changed, b"not an image any more").expect("change");
    ok(dir, &["import", "wh"]);
    let before = contents(&db);
    let mut store = Store::open(&db, Access::ReadWrite).expect("open");
    let report = merge_import(&mut store, &jobs).expect("merge");
    drop(store);
    // The plain import stored what the shards found (so it counts as merged); the
    // changed file is newer in the store than in the parts.
    assert_eq!(report.counts.written(), 0, "{report:?}");
    assert_eq!(report.counts.moved, 1, "{report:?}");
    assert_eq!(
        report.counts.merged_before,
        report.files as u64 - 1,
        "{report:?}"
    );
    assert_eq!(contents(&db), before, "the merge changed the store");
}

/// Rewrites a part through `select` (SQL over `read_parquet(part)`) and its manifest's
/// checksum to match, as someone with write access to the job folder could.
fn forge(part: &Path, select: &str) {
    let conn = duckdb::Connection::open_in_memory().expect("duckdb");
    let forged = part.with_extension("forged");
    conn.execute_batch(&format!(
        "COPY ({}) TO '{}' (FORMAT parquet)",
        select.replace("PART", &format!("read_parquet('{}')", part.display())),
        forged.display()
    ))
    .expect("forge");
    std::fs::rename(&forged, part).expect("replace the part");
    let manifest = part.with_extension("json");
    let mut line: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).expect("manifest")).expect("json");
    line["sha256"] = cdwqc::cluster::file_sha256(part).expect("sha").into();
    std::fs::write(&manifest, line.to_string()).expect("write the manifest");
}

#[test]
fn a_forged_part_cannot_touch_or_write_files_it_was_not_dealt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    warehouse(dir);
    ok(dir, &["init"]);
    ok(dir, &["import", "wh"]);
    // Every file rewritten with its own bytes: same content, new times, so the shard
    // answers with touches of the stored images.
    for entry in walk(&dir.join("wh")) {
        let bytes = std::fs::read(&entry).expect("read");
        std::fs::write(&entry, bytes).expect("rewrite");
    }
    let db = dir.join("cdwqc.duckdb");
    let jobs = dir.join("jobs");
    let opts = ImportOptions {
        root: dir.join("wh"),
        include_derivatives: false,
        force: false,
        progress: false,
        iqm: true,
    };
    {
        let store = Store::open(&db, Access::ReadOnly).expect("open");
        let (plan, known) =
            cdwqc::import::plan(&opts, |root| store.known_files(root)).expect("plan");
        ImportWorkList::new(&plan, &known, &opts, 1, &db)
            .write(&jobs.join(IMPORT_LIST))
            .expect("write the list");
    }
    let outcome = run_import_shard(
        &jobs.join(IMPORT_LIST),
        Shard { index: 0, count: 1 },
        &AtomicBool::new(false),
    )
    .expect("shard");
    assert!(outcome.manifest.unchanged > 10, "{:?}", outcome.manifest);
    let part = outcome.part;
    let kept = std::fs::read(&part).expect("part");
    let before = contents(&db);
    let refused = |contains: &str| {
        let mut store = Store::open(&db, Access::ReadWrite).expect("open");
        let err = merge_import(&mut store, &jobs).expect_err("a forged part merged");
        drop(store);
        assert!(
            err.to_string().contains(contains),
            "{contains:?} not in {err}"
        );
        assert_eq!(contents(&db), before, "a refused merge changed the store");
    };
    // A touch naming another image than the file's own.
    forge(
        &part,
        "SELECT * REPLACE (CASE WHEN kind = 'touch' THEN touch_image_id + 1 END AS touch_image_id) FROM PART",
    );
    refused("that the import list does not allow");
    // A row for a file the list never dealt (and one dealt file dropped).
    std::fs::write(&part, &kept).expect("restore");
    forge(
        &part,
        "SELECT * REPLACE (CASE WHEN path = (SELECT min(path) FROM PART) THEN '/etc/passwd' ELSE path END AS path) FROM PART",
    );
    refused("files dealt to it");
    // The honest part merges: every file touched.
    std::fs::write(&part, &kept).expect("restore");
    forge(&part, "SELECT * FROM PART");
    let mut store = Store::open(&db, Access::ReadWrite).expect("open");
    let report = merge_import(&mut store, &jobs).expect("merge");
    assert_eq!(
        report.counts.touched, outcome.manifest.unchanged as u64,
        "{report:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.to_string_lossy().ends_with(".nii.gz") {
            files.push(path);
        }
    }
    files
}

/// Submitting to Slurm only reads the store: every write waits for the merge job. A
/// stand-in `sbatch` takes the scripts; the store's bytes are the same afterwards, and
/// a merge by hand then writes the new files.
#[test]
fn submitting_an_import_to_slurm_leaves_the_store_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    warehouse(dir);
    ok(dir, &["init"]);
    ok(dir, &["import", "wh"]);
    let anat = dir.join("wh/sub-0002/ses-01/anat");
    let file = std::fs::read_dir(&anat)
        .expect("anat")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .expect("a file");
    std::fs::copy(&file, anat.join("sub-0002_ses-01_acq-new_T2w.nii.gz")).expect("a new file");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("bin");
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/calls\"\necho 4242\n",
    )
    .expect("sbatch");
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let before = std::fs::read(dir.join("cdwqc.duckdb")).expect("store");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args([
            "slurm", "submit", "import", "wh", "--shards", "2", "--dir", "jobs",
        ])
        .current_dir(dir)
        .env_remove("CDWQC_DB")
        .env("PATH", path)
        .output()
        .expect("cdwqc runs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("submitted array job 4242"),
        "{}",
        stdout(&out)
    );
    let calls = std::fs::read_to_string(bin.join("calls")).expect("sbatch was called");
    assert_eq!(calls.lines().count(), 2, "the array and its merge: {calls}");
    assert_eq!(
        std::fs::read(dir.join("cdwqc.duckdb")).expect("store"),
        before,
        "submitting wrote to the store"
    );
    assert!(!dir.join("cdwqc.duckdb.wal").exists());
    // What the array would do, by hand; then the merge writes the new file.
    for k in ["0/2", "1/2"] {
        ok(
            dir,
            &[
                "import",
                "--shard",
                k,
                "--work-list",
                &format!("jobs/{IMPORT_LIST}"),
            ],
        );
    }
    let merged = ok(dir, &["merge", "jobs"]);
    assert!(merged.contains("1 new"), "{merged}");
}
