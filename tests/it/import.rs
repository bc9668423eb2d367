//! `cdwqc import` on real files and every malformed case: one row per file, the right
//! status and reason, idempotent re-runs, changed / vanished / restored files.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::support::{cdwqc, external, float_volume, gzip, is_root, nifti1, ok, stderr, stdout};

/// Builds a warehouse with real images (BIDS layout) and every malformed case.
/// Returns the expected status and a fragment of the reason per relative path.
fn build_warehouse(root: &Path) -> HashMap<String, (&'static str, &'static str)> {
    let anat = root.join("sub-01/ses-01/anat");
    std::fs::create_dir_all(&anat).expect("mkdir");
    let mut expect = HashMap::new();
    let real = |name: &str, rel: &str| {
        std::fs::copy(external(name), root.join(rel)).expect("copy");
    };
    real(
        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz",
    );
    real(
        "anatomical.nii",
        "sub-01/ses-01/anat/sub-01_ses-01_acq-big_FLAIR.nii",
    );
    real("example4d.nii.gz", "example4d.nii.gz");
    real("example_nifti2.nii.gz", "example_nifti2.nii.gz");
    for rel in [
        "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz",
        "sub-01/ses-01/anat/sub-01_ses-01_acq-big_FLAIR.nii",
        "example4d.nii.gz",
        "example_nifti2.nii.gz",
    ] {
        expect.insert(rel.to_string(), ("ok", ""));
    }
    std::fs::write(
        anat.join("sub-01_ses-01_T1w.json"),
        r#"{"Manufacturer": "GE", "MagneticFieldStrength": 1.5, "MRAcquisitionType": "3D"}"#,
    )
    .expect("sidecar");

    let bad = root.join("bad");
    std::fs::create_dir_all(&bad).expect("mkdir");
    let write = |name: &str, bytes: &[u8]| std::fs::write(bad.join(name), bytes).expect("write");
    let t1 =
        std::fs::read(external("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).expect("read");
    write("truncated_gzip.nii.gz", &t1[..t1.len() / 2]);
    expect.insert(
        "bad/truncated_gzip.nii.gz".into(),
        ("failed", "corrupt gzip"),
    );
    write(
        "vox_offset_inside_header.nii",
        &nifti1([3, 2, 2, 2, 1, 1, 1, 1], 2, 8, 12.0, &[0; 8]),
    );
    expect.insert(
        "bad/vox_offset_inside_header.nii".into(),
        ("failed", "vox_offset 12 points inside the header"),
    );
    write(
        "vox_offset_past_end.nii",
        &nifti1([3, 2, 2, 2, 1, 1, 1, 1], 2, 8, 9000.0, &[0; 8]),
    );
    expect.insert(
        "bad/vox_offset_past_end.nii".into(),
        ("failed", "beyond the end"),
    );
    write(
        "negative_dim.nii",
        &nifti1([3, 4, -4, 4, 1, 1, 1, 1], 2, 8, 352.0, &[0; 64]),
    );
    expect.insert("bad/negative_dim.nii".into(), ("failed", "dim[2] = -4"));
    write(
        "short_data.nii.gz",
        &gzip(&nifti1([3, 8, 8, 8, 1, 1, 1, 1], 2, 8, 352.0, &[0; 100])),
    );
    expect.insert("bad/short_data.nii.gz".into(), ("failed", "truncated"));
    write(
        "flat_2d.nii",
        &nifti1([2, 8, 8, 1, 1, 1, 1, 1], 2, 8, 352.0, &[0; 64]),
    );
    expect.insert("bad/flat_2d.nii".into(), ("failed", "2D image"));
    write(
        "five_d.nii",
        &nifti1([5, 2, 2, 2, 1, 3, 1, 1], 2, 8, 352.0, &[0; 24]),
    );
    expect.insert("bad/five_d.nii".into(), ("failed", "5D image"));
    write(
        "not_nifti.nii",
        b"this is a text file that someone named .nii by mistake\n",
    );
    expect.insert("bad/not_nifti.nii".into(), ("failed", "not a NIfTI file"));
    write("empty.nii.gz", b"");
    expect.insert("bad/empty.nii.gz".into(), ("failed", "empty file"));
    std::os::unix::fs::symlink(bad.join("does_not_exist.nii"), bad.join("broken_link.nii"))
        .expect("symlink");
    expect.insert(
        "bad/broken_link.nii".into(),
        ("failed", "broken symbolic link"),
    );
    let fifo = bad.join("fifo.nii");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    expect.insert("bad/fifo.nii".into(), ("failed", "not a regular file"));
    if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        write("unreadable.nii", &float_volume([2, 2, 2], |i| i as f32));
        std::fs::set_permissions(
            bad.join("unreadable.nii"),
            std::fs::Permissions::from_mode(0o000),
        )
        .expect("chmod");
        expect.insert("bad/unreadable.nii".into(), ("failed", "ermission denied"));
    }
    write(
        "with_nan.nii",
        &float_volume([4, 4, 4], |i| {
            if i % 7 == 0 {
                f32::NAN
            } else if i == 5 {
                f32::INFINITY
            } else {
                i as f32
            }
        }),
    );
    expect.insert("bad/with_nan.nii".into(), ("ok", ""));
    // Not images: never indexed.
    write("notes.txt", b"not an image");
    std::fs::create_dir_all(root.join("derivatives/seg")).expect("mkdir");
    std::fs::write(root.join("derivatives/seg/mask.nii"), b"skipped").expect("write");
    expect
}

fn rows(dir: &Path) -> HashMap<String, (String, String, String)> {
    let json = ok(
        dir,
        &[
            "sql",
            "select rel_path, status, coalesce(error, '') as error, coalesce(warnings, '') as warnings from images",
            "--format",
            "json",
        ],
    );
    let value: Value = serde_json::from_str(&json).expect("json");
    value
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["rel_path"].as_str().expect("path").to_string(),
                (
                    r["status"].as_str().expect("status").to_string(),
                    r["error"].as_str().expect("error").to_string(),
                    r["warnings"].as_str().expect("warnings").to_string(),
                ),
            )
        })
        .collect()
}

fn import_json(dir: &Path, root: &str) -> Value {
    serde_json::from_str(&ok(dir, &["import", root, "--json"])).expect("summary JSON")
}

#[test]
fn import_indexes_every_file_and_a_second_run_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    let expect = build_warehouse(&w);
    ok(dir, &["init"]);
    let first = import_json(dir, "w");
    let n = expect.len() as u64;
    assert_eq!(first["found"], n);
    let failed = expect.values().filter(|(s, _)| *s == "failed").count() as u64;
    assert_eq!(first["failed"], failed);
    assert_eq!(first["added"], n - failed);
    assert_eq!(
        first["failures"].as_array().expect("list").len() as u64,
        failed
    );

    let stored = rows(dir);
    assert_eq!(stored.len(), expect.len(), "one row per file: {stored:?}");
    for (rel, (status, reason)) in &expect {
        let (s, e, _) = stored
            .get(rel)
            .unwrap_or_else(|| panic!("no row for {rel}"));
        assert_eq!(s, status, "{rel}: {e}");
        assert!(
            e.contains(reason),
            "{rel}: reason {e:?} should mention {reason:?}"
        );
        assert!(!e.contains('\n'), "{rel}: reason is one line");
    }
    let (_, _, warnings) = &stored["bad/with_nan.nii"];
    assert!(warnings.contains("NaN or infinite"), "{warnings}");
    // No NaN reached a statistic.
    let stats = ok(
        dir,
        &[
            "sql",
            "select count(*) from images where status = 'ok' and (isnan(intensity_mean) or isnan(intensity_std) or isinf(intensity_max))",
            "--format",
            "csv",
        ],
    );
    assert_eq!(stats.lines().nth(1), Some("0"));
    // Entities, sidecar and previews of a BIDS file.
    let t1 = ok(
        dir,
        &[
            "sql",
            "select subject, session, suffix, manufacturer, field_strength, orientation, (select count(*) from previews p where p.image_id = i.image_id) as previews from images i where suffix = 'T1w'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(t1.lines().nth(1), Some("01,01,T1w,GE,1.5,RAS,3"));

    let second = import_json(dir, "w");
    assert_eq!(second["unchanged"], n);
    for key in ["added", "updated", "failed", "missing"] {
        assert_eq!(second[key], 0, "second run: {key}");
    }
    assert_eq!(second["still_failing"], failed);
    assert_eq!(rows(dir), stored, "a second run changes nothing");

    // A sidecar fixed since: its image's bytes are the same, so only --force reads it.
    std::fs::write(
        dir.join("w/sub-01/ses-01/anat/sub-01_ses-01_T1w.json"),
        r#"{"Manufacturer": "Siemens", "MagneticFieldStrength": 3, "MRAcquisitionType": "3D"}"#,
    )
    .expect("sidecar");
    let forced = ok(dir, &["import", "w", "--force"]);
    assert!(!forced.is_empty());
    let t1 = ok(
        dir,
        &[
            "sql",
            "select manufacturer, field_strength from images where suffix = 'T1w'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(t1.lines().nth(1), Some("Siemens,3"), "{t1}");
}

#[test]
fn changed_vanished_and_restored_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    std::fs::create_dir_all(&w).expect("mkdir");
    std::fs::write(w.join("a.nii"), float_volume([3, 3, 3], |i| i as f32)).expect("write");
    std::fs::write(w.join("b.nii"), float_volume([3, 3, 3], |_| 1.0)).expect("write");
    ok(dir, &["init"]);
    import_json(dir, "w");
    let id_before = ok(
        dir,
        &[
            "sql",
            "select image_id from images where rel_path = 'a.nii'",
            "--format",
            "csv",
        ],
    );

    // Same bytes, new time: unchanged (hash); new content: updated, same image_id.
    std::fs::write(w.join("b.nii"), float_volume([3, 3, 3], |_| 1.0)).expect("rewrite");
    std::fs::write(w.join("a.nii"), float_volume([3, 3, 3], |i| 2.0 * i as f32)).expect("change");
    let s = import_json(dir, "w");
    assert_eq!(
        (s["updated"].as_u64(), s["unchanged"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let id_after = ok(
        dir,
        &[
            "sql",
            "select image_id from images where rel_path = 'a.nii'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(id_before, id_after);

    std::fs::remove_file(w.join("b.nii")).expect("remove");
    let s = import_json(dir, "w");
    assert_eq!(s["missing"], 1);
    assert_eq!(rows(dir)["b.nii"].0, "missing");

    std::fs::write(w.join("b.nii"), float_volume([3, 3, 3], |_| 1.0)).expect("restore");
    let s = import_json(dir, "w");
    assert_eq!(s["updated"], 1);
    assert_eq!(rows(dir)["b.nii"].0, "ok");

    // A subfolder imported on its own knows its files (nothing new), and the parent's
    // next import still sees one vanish there.
    let sub = w.join("sub-02");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::write(
        sub.join("c.nii"),
        float_volume([3, 3, 3], |i| 3.0 * i as f32),
    )
    .expect("c");
    assert_eq!(import_json(dir, "w")["added"], 1);
    let s = import_json(dir, "w/sub-02");
    assert_eq!(
        (s["added"].as_u64(), s["unchanged"].as_u64()),
        (Some(0), Some(1)),
        "{s}"
    );
    std::fs::remove_file(sub.join("c.nii")).expect("remove");
    let s = import_json(dir, "w");
    assert_eq!(s["missing"], 1, "{s}");
    // Files in a folder the walk skips (derivatives) are not counted gone by it.
    let derived = w.join("derivatives/x");
    std::fs::create_dir_all(&derived).expect("mkdir");
    std::fs::write(derived.join("d.nii"), float_volume([3, 3, 3], |_| 2.0)).expect("d");
    assert_eq!(import_json(dir, "w/derivatives/x")["added"], 1);
    let s = import_json(dir, "w");
    assert_eq!(s["missing"], 0, "{s}");
    let status = ok(
        dir,
        &[
            "sql",
            "select status from images where path like '%/d.nii'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(status.lines().nth(1), Some("ok"));
}

#[test]
fn import_errors_name_the_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let o = cdwqc(dir, &["import", "w"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no store at cdwqc.duckdb"),
        "{}",
        stderr(&o)
    );
    ok(dir, &["init"]);
    let o = cdwqc(dir, &["import", "nowhere"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nowhere"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

/// The NIfTI-2 file that once ended every import: dims [3, 2^62, 2, 2] multiply to
/// 2^64, which wrapped to an empty volume. uint8, vox_offset 544, 548 bytes.
fn crafted_nifti2() -> Vec<u8> {
    let mut h = vec![0u8; 544];
    h[0..4].copy_from_slice(&540i32.to_le_bytes());
    h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    h[12..14].copy_from_slice(&2i16.to_le_bytes());
    h[14..16].copy_from_slice(&8i16.to_le_bytes());
    for (i, d) in [3i64, 1 << 62, 2, 2, 1, 1, 1, 1].iter().enumerate() {
        h[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.to_le_bytes());
    }
    for i in 0..4 {
        h[104 + 8 * i..112 + 8 * i].copy_from_slice(&1.0f64.to_le_bytes());
    }
    h[168..176].copy_from_slice(&544i64.to_le_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(h.len(), 548);
    h
}

#[test]
fn hostile_files_become_failed_rows_and_never_end_an_import() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    std::fs::create_dir_all(&w).expect("mkdir");
    let write = |name: &str, bytes: &[u8]| std::fs::write(w.join(name), bytes).expect("write");
    write("good.nii", &float_volume([4, 3, 3], |i| i as f32));
    write(
        "good_too.nii.gz",
        &gzip(&float_volume([3, 3, 3], |i| (i % 5) as f32)),
    );
    write("crafted_nifti2.nii", &crafted_nifti2());
    // 8 MB on disk that inflate to 8 GiB past a valid 2x2x2 header.
    let small = nifti1([3, 2, 2, 2, 1, 1, 1, 1], 2, 8, 352.0, &[5; 8]);
    let bomb = cdwqc::import::fuzz::gzip_bomb(&small, 8 << 30);
    assert!(bomb.len() < 16 << 20, "{} bytes", bomb.len());
    write("bomb.nii.gz", &bomb);
    // Huge but plausible headers over a few bytes of data: nothing is allocated for them.
    let huge = nifti1([3, 1000, 1000, 1000, 1, 1, 1, 1], 16, 32, 352.0, &[0; 64]);
    write("huge_claim.nii", &huge);
    write("huge_claim_gz.nii.gz", &gzip(&huge));
    let expected = [
        ("crafted_nifti2.nii", "dim[1] = 4611686018427387904"),
        ("bomb.nii.gz", "decompression bomb"),
        (
            "huge_claim.nii",
            "truncated: voxel data needs 4000000000 bytes",
        ),
        ("huge_claim_gz.nii.gz", "only 64 present"),
    ];
    ok(dir, &["init"]);
    let check = |summary: &Value| {
        let stored = rows(dir);
        assert_eq!(stored.len(), 6, "{stored:?}");
        for good in ["good.nii", "good_too.nii.gz"] {
            assert_eq!(stored[good].0, "ok", "{good}: {:?}", stored[good]);
        }
        for (name, reason) in expected {
            let (status, error, _) = &stored[name];
            assert_eq!(status, "failed", "{name}");
            assert!(
                error.contains(reason),
                "{name}: {error:?} should say {reason:?}"
            );
        }
        assert_eq!(summary["found"], 6, "{summary}");
    };
    let first = import_json(dir, "w");
    assert_eq!(
        (first["added"].as_u64(), first["failed"].as_u64()),
        (Some(2), Some(4))
    );
    check(&first);
    // A re-run finds the same. A forced one analyses every file again (their sidecars
    // too, which their bytes do not show) and, their content being the same, writes
    // every row as it was.
    let second = import_json(dir, "w");
    assert_eq!(second["still_failing"], 4, "{second}");
    check(&second);
    let before = ok(
        dir,
        &[
            "sql",
            "select * exclude (updated_at) from images order by path",
            "--format",
            "csv",
        ],
    );
    let forced: Value =
        serde_json::from_str(&ok(dir, &["import", "w", "--force", "--json"])).expect("JSON");
    assert_eq!(
        (
            forced["updated"].as_u64(),
            forced["failed"].as_u64(),
            forced["added"].as_u64()
        ),
        (Some(2), Some(4), Some(0)),
        "{forced}"
    );
    check(&forced);
    let after = ok(
        dir,
        &[
            "sql",
            "select * exclude (updated_at) from images order by path",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        before, after,
        "a forced import of the same files changes no row"
    );
    // `cdwqc inspect` names the bad header and exits 1 (some file failed), never 101.
    let o = cdwqc(dir, &["inspect", "w", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let inspected = stdout(&o);
    assert_eq!(inspected.lines().count(), 6, "{inspected}");
    assert!(
        inspected.contains("dim[1] = 4611686018427387904"),
        "{inspected}"
    );
}

#[test]
fn special_files_and_names_fail_without_reading_and_without_merging() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    std::fs::create_dir_all(&w).expect("mkdir");
    std::fs::write(w.join("good.nii"), float_volume([4, 3, 3], |i| i as f32)).expect("write");
    // Sized 0 by stat, then read without end: it filled memory until the kernel killed
    // the import.
    std::os::unix::fs::symlink("/proc/self/pagemap", w.join("pagemap.nii")).expect("link");
    std::os::unix::fs::symlink("/proc/self/pagemap", w.join("good.json")).expect("link");
    let fifo = std::process::Command::new("mkfifo")
        .arg(w.join("fifo.nii"))
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    // Two names that differ only in bytes that are not UTF-8: stored lossily they were
    // one row, which each import gave to the other file.
    for byte in [0xFFu8, 0xFE] {
        let mut name = b"odd_".to_vec();
        name.push(byte);
        name.extend_from_slice(b".nii");
        std::fs::write(
            w.join(std::ffi::OsStr::from_bytes(&name)),
            float_volume([3, 3, 3], |i| (i + usize::from(byte)) as f32),
        )
        .expect("write");
    }
    // A UTF-8 name that spells the other's escape: the two took turns over one row.
    std::fs::write(
        w.join("odd_\\xFF.nii"),
        float_volume([3, 3, 2], |i| i as f32),
    )
    .expect("write");
    ok(dir, &["init"]);
    let first = import_json(dir, "w");
    assert_eq!(
        (first["added"].as_u64(), first["failed"].as_u64()),
        (Some(2), Some(4)),
        "{first}"
    );
    let stored = rows(dir);
    assert_eq!(stored.len(), 6, "{stored:?}");
    assert_eq!(stored["odd_\\xFF.nii"].0, "ok");
    assert_eq!(stored["good.nii"].0, "ok");
    assert!(
        stored["good.nii"].2.contains("empty file"),
        "{:?}",
        stored["good.nii"]
    );
    assert_eq!(stored["pagemap.nii"].1, "empty file");
    assert_eq!(stored["fifo.nii"].1, "not a regular file");
    for name in ["odd_\\xFF.nii//not-UTF-8", "odd_\\xFE.nii//not-UTF-8"] {
        let (status, error, _) = &stored[name];
        assert_eq!(status, "failed");
        assert!(error.contains("not valid UTF-8"), "{error}");
    }
    // Nothing changed, nothing flips (the pagemap's time is its reader's start, so it is
    // looked at again, and fails again).
    let second = import_json(dir, "w");
    assert_eq!(second["added"], 0, "{second}");
    assert_eq!(second["updated"], 0, "{second}");
    assert_eq!(rows(dir), stored);
    // The other readers refuse the same files at once.
    let o = cdwqc(dir, &["inspect", "w/pagemap.nii"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = cdwqc(dir, &["iqm", "--file", "w/fifo.nii"]);
    assert!(stdout(&o).contains("not a regular file"), "{}", stdout(&o));
}

#[test]
fn a_file_running_on_far_past_its_image_fails_without_being_read_to_its_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    std::fs::create_dir_all(&w).expect("mkdir");
    std::fs::write(w.join("good.nii"), float_volume([4, 3, 3], |i| i as f32)).expect("write");
    // A valid image, a header no reader takes, and a gzip image, each followed by a
    // terabyte of holes: every byte of them was hashed, which held the import for most
    // of an hour.
    let bad_header = vec![0x41u8; 400];
    let gz = gzip(&float_volume([3, 3, 3], |i| i as f32));
    for (name, bytes) in [
        ("long.nii", float_volume([3, 3, 3], |i| i as f32)),
        ("long_bad.nii", bad_header),
        ("long.nii.gz", gz),
    ] {
        let path = w.join(name);
        std::fs::write(&path, bytes).expect("write");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(1 << 40).expect("sparse file");
    }
    ok(dir, &["init"]);
    let first = import_json(dir, "w");
    assert_eq!(
        (first["added"].as_u64(), first["failed"].as_u64()),
        (Some(1), Some(3)),
        "{first}"
    );
    let stored = rows(dir);
    assert_eq!(stored["good.nii"].0, "ok");
    let long = &stored["long.nii"];
    assert_eq!(long.0, "failed");
    assert!(
        long.1
            .contains("runs on for more than 64 MiB past its first 540 bytes"),
        "{long:?}"
    );
    assert!(
        stored["long_bad.nii"].1.contains("NIfTI"),
        "{:?}",
        stored["long_bad.nii"]
    );
    assert_eq!(stored["long.nii.gz"].0, "failed");
    // Not hashed: the hash would be of bytes that were never read.
    let hashed = ok(
        dir,
        &[
            "sql",
            "select count(sha256) as n from images where rel_path like 'long%'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(hashed.trim(), "n\n0", "{hashed}");
    // The next import skips them by their unchanged size and time.
    let second = import_json(dir, "w");
    assert_eq!(second["unchanged"], 4, "{second}");
    assert_eq!(rows(dir), stored);
}

#[test]
fn an_image_needing_more_memory_than_the_import_may_hold_is_a_failed_row() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    std::fs::create_dir_all(&w).expect("mkdir");
    // 64^3 floats: 1 MiB of voxels, past the size below which the header is not read.
    std::fs::write(
        w.join("big.nii"),
        float_volume([64, 64, 64], |i| (i % 97) as f32),
    )
    .expect("write");
    std::fs::write(w.join("small.nii"), float_volume([4, 4, 4], |i| i as f32)).expect("write");
    // The same voxels gzipped to a few KiB: a small file can need as much.
    std::fs::write(
        w.join("packed.nii.gz"),
        gzip(&float_volume([64, 64, 64], |_| 1.0)),
    )
    .expect("write");
    ok(dir, &["init"]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .current_dir(dir)
        .env("CDWQC_IMPORT_MEMORY_MB", "2")
        .args(["import", "w", "--json"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let stored = rows(dir);
    assert_eq!(stored["small.nii"].0, "ok");
    let (status, error, _) = &stored["big.nii"];
    assert_eq!(status, "failed");
    assert!(
        error.contains("needs about 4 MiB of memory, more than the 2 MiB"),
        "{error}"
    );
    let (status, error, _) = &stored["packed.nii.gz"];
    assert_eq!(status, "failed");
    assert!(error.contains("more than the 2 MiB"), "{error}");
    // With the machine's default it imports.
    ok(dir, &["import", "w", "--force"]);
    assert_eq!(rows(dir)["big.nii"].0, "ok");
    assert_eq!(rows(dir)["packed.nii.gz"].0, "ok");
}

#[test]
fn a_file_changed_under_a_time_before_1970_is_imported_again() {
    // Every time before 1970 was stamped 0, so a change between two such times (an
    // archive restored with odd times) kept the old hash, metrics and previews.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w/sub-01/anat");
    std::fs::create_dir_all(&w).expect("mkdir");
    let file = w.join("sub-01_FLAIR.nii");
    let touch = |when: &str| {
        let done = std::process::Command::new("touch")
            .args(["-d", when])
            .arg(&file)
            .status()
            .expect("touch");
        assert!(done.success());
    };
    std::fs::write(&file, float_volume([4, 3, 3], |i| i as f32)).expect("write");
    touch("@-100");
    ok(dir, &["init"]);
    assert_eq!(import_json(dir, "w")["added"], 1);
    // The same size, other values, another time before 1970.
    std::fs::write(&file, float_volume([4, 3, 3], |i| 2.0 * i as f32)).expect("write");
    touch("@-7777");
    let again = import_json(dir, "w");
    assert_eq!(again["updated"], 1, "{again}");
    touch("@-7777");
    assert_eq!(import_json(dir, "w")["unchanged"], 1);
}
