//! Rating from the command line: queues, the line-mode loop, undo, and durability of a
//! save when the process is killed right after it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::support::{assert_summaries_exact, cdwqc, float_volume, ok, stderr, stdout};

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
    let text = rate_lines(dir, "ann", b"kaz\nrk\nzz\nu\nr\nq\n");
    assert!(text.contains("saved image 1: kaz"), "{text}");
    // No rating id: it would tell a blind rater how many ratings others saved.
    assert!(!text.contains("rating #"), "{text}");
    assert!(text.contains("invalid code 'rk'"), "{text}");
    assert!(
        text.contains("withdrew your last rating, of image 2"),
        "{text}"
    );
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
    // Saves, a supersede and an undo keep the image list's summaries exact.
    assert_summaries_exact(dir, "cdwqc.duckdb");
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
    let mut saved_image = None;
    let mut line = String::new();
    while reader.read_line(&mut line).expect("read") > 0 {
        if let Some(rest) = line.split("saved image ").nth(1) {
            saved_image = rest.split(':').next().map(str::to_string);
            break;
        }
        line.clear();
    }
    let image = saved_image.expect("the loop reported a save");
    // Killed at once, without a chance to flush or close anything.
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let stored = ok(
        dir,
        &[
            "sql",
            &format!("select code from ratings where rater = 'ann' and image_id = {image}"),
            "--format",
            "csv",
        ],
    );
    assert_eq!(stored, "code\naa\n");
}

#[test]
fn a_bids_name_picks_its_image_over_one_with_more_entities() {
    let tmp = store(1);
    let dir = tmp.path();
    std::fs::write(
        dir.join("w/sub-00/anat/sub-00_acq-3D_FLAIR.nii"),
        float_volume([6, 6, 6], |v| v as f32 * 3.0),
    )
    .expect("write");
    ok(dir, &["import", "w"]);
    // The notebook names each image by its stem; `sub-00_FLAIR` also matches the
    // acq-3D image, and must rate the plain one.
    let input =
        "index\timg_id\tcode\tlabel\n0\tsub-00_FLAIR\tkaz\t2\n1\tsub-00_acq-3D_FLAIR\tr\t4\n";
    std::fs::write(dir.join("nb.tsv"), input).expect("write");
    ok(dir, &["ratings", "import", "nb.tsv", "--rater", "ann"]);
    let stored = ok(
        dir,
        &[
            "sql",
            "select i.rel_path, r.code from ratings_latest r join images i using (image_id) order by 1",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        stored,
        "rel_path,code\nsub-00/anat/sub-00_FLAIR.nii,kaz\nsub-00/anat/sub-00_acq-3D_FLAIR.nii,r\n"
    );
    assert_eq!(
        ok(dir, &["ratings", "export", "--notebook", "--rater", "ann"]),
        input
    );
    // A name that leaves out an entity two images differ by is still refused.
    std::fs::write(
        dir.join("w/sub-00/anat/sub-00_acq-2D_FLAIR.nii"),
        float_volume([6, 6, 6], |v| v as f32 * 5.0),
    )
    .expect("write");
    std::fs::remove_file(dir.join("w/sub-00/anat/sub-00_FLAIR.nii")).expect("rm");
    ok(dir, &["import", "w"]);
    std::fs::write(
        dir.join("loose.tsv"),
        "index\timg_id\tcode\tlabel\n0\tsub-00_FLAIR\tkaz\t2\n",
    )
    .expect("write");
    let o = cdwqc(dir, &["ratings", "import", "loose.tsv", "--rater", "bob"]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("matches 2 images"), "{}", stdout(&o));
}

#[test]
fn notebook_import_then_export_gives_the_same_codes() {
    let tmp = store(4);
    let dir = tmp.path();
    let input = "index\timg_id\tcode\tlabel\n0\tsub-00_FLAIR\tkaz\t2\n1\tsub-01_FLAIR\tr\t4\n2\tsub-02_FLAIR\t\t1\n3\tsub-03_FLAIR\tzzd\t3\n";
    std::fs::write(dir.join("nb.tsv"), input).expect("write");
    ok(dir, &["ratings", "import", "nb.tsv", "--rater", "ann"]);
    assert_summaries_exact(dir, "cdwqc.duckdb");
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

/// Rows of `select ...` as CSV lines without the header.
fn csv_rows(dir: &std::path::Path, sql: &str) -> Vec<String> {
    ok(dir, &["sql", sql, "--format", "csv"])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn mriqc_table_with_missing_values_imports_what_each_rater_rated() {
    let tmp = store(4);
    let dir = tmp.path();
    // As MRIQC and BIDS write them: n/a for a rater who did not rate the image.
    std::fs::write(
        dir.join("mriqc.tsv"),
        "bids_name\trater_1\trater_2\trater_3\n\
         sub-00_FLAIR\t1\tn/a\tn/a\n\
         sub-01_FLAIR\tn/a\t-1\tNA\n\
         sub-02_FLAIR\t0\t1.0\t\n\
         sub-03_FLAIR\tn/a\tn/a\tn/a\n",
    )
    .expect("write");
    let out = ok(
        dir,
        &[
            "ratings",
            "import",
            "mriqc.tsv",
            "--format",
            "mriqc",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["imported"], 4, "{out}");
    assert_eq!(report["missing"], 8, "{out}");
    assert_eq!(report["saved"], true, "{out}");
    assert_eq!(
        csv_rows(
            dir,
            "select rater, count(*) from ratings_latest group by rater order by rater"
        ),
        ["rater_1,2", "rater_2,2"],
        "a missing value is no rating; rater_3 rated nothing"
    );
    assert_eq!(
        csv_rows(dir, "select name from raters order by name"),
        ["rater_1", "rater_2"]
    );
}

#[test]
fn rater_flag_contradicting_the_rater_column_is_refused() {
    let tmp = store(2);
    let dir = tmp.path();
    std::fs::write(
        dir.join("mriqc.tsv"),
        "bids_name\trater_1\trater_2\nsub-00_FLAIR\t1\t0\nsub-01_FLAIR\t-1\t1\n",
    )
    .expect("write");
    let refused = cdwqc(
        dir,
        &[
            "ratings",
            "import",
            "mriqc.tsv",
            "--format",
            "mriqc",
            "--rater",
            "rater_1",
        ],
    );
    assert!(!refused.status.success());
    let message = stderr(&refused);
    for part in ["mriqc.tsv", "line 2", "--rater rater_1", "rater_2"] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    std::fs::write(
        dir.join("native.tsv"),
        "subject\tsuffix\trater\tcode\n00\tFLAIR\tbob\ta\n",
    )
    .expect("write");
    let refused = cdwqc(dir, &["ratings", "import", "native.tsv", "--rater", "ann"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    for part in ["native.tsv", "line 2", "--rater ann", "bob"] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert_eq!(csv_rows(dir, "select count(*) from ratings"), ["0"]);
    assert!(csv_rows(dir, "select name from raters").is_empty());
    // Agreeing with the column is fine.
    ok(dir, &["ratings", "import", "native.tsv", "--rater", "bob"]);
    assert_eq!(
        csv_rows(dir, "select rater, code from ratings_latest"),
        ["bob,a"]
    );
}

#[test]
fn times_going_backwards_never_make_an_older_save_win() {
    let tmp = store(2);
    let dir = tmp.path();
    let header = "subject\tsuffix\trater\tcode\trated_at\n";
    // One file whose times run backwards: the row saved last is in force.
    std::fs::write(
        dir.join("first.tsv"),
        format!(
            "{header}00\tFLAIR\tann\ta\t2030-01-01T00:00:00Z\n\
             00\tFLAIR\tann\tz\t1999-01-01T00:00:00Z\n\
             01\tFLAIR\tann\td\t2030-01-01T00:00:00Z\n"
        ),
    )
    .expect("write");
    ok(dir, &["ratings", "import", "first.tsv"]);
    let in_force = "select i.subject, l.code from ratings_latest l join images i using (image_id) \
                    order by i.subject";
    assert_eq!(csv_rows(dir, in_force), ["00,z", "01,d"]);
    // A save made while the clock was far ahead (then set back): the later save wins.
    ok(
        dir,
        &[
            "sql",
            "--write",
            "insert into ratings (image_id, rater, usable, gado, motion, contrast, noise, code, \
             protocol_version, source, rated_at, saved_at) select image_id, 'ann', true, false, 0, 0, \
             2, 'dd', '1', 'test', '2125-01-01 00:00:00+00', '2125-01-01 00:00:00+00' \
             from images where subject = '01'",
        ],
    );
    std::fs::write(
        dir.join("second.tsv"),
        format!("{header}01\tFLAIR\tann\tkd\t1970-01-01T00:00:00Z\n"),
    )
    .expect("write");
    ok(dir, &["ratings", "import", "second.tsv"]);
    assert_eq!(csv_rows(dir, in_force), ["00,z", "01,kd"]);
    assert_eq!(
        csv_rows(
            dir,
            "select usable_label, quality_label, gado_label from rater_labels \
             join images using (image_id) where subject = '01'"
        ),
        ["usable,medium,gado"],
        "the labels follow the rating in force"
    );
}

#[test]
fn an_import_that_fails_halfway_leaves_no_rating_and_no_rater() {
    let tmp = store(3);
    let dir = tmp.path();
    // The store refuses a row halfway through the file: a unique index added by hand
    // allows one rating per image and rater, and the file rates sub-01 twice.
    ok(
        dir,
        &[
            "sql",
            "--write",
            "create unique index one_rating_each on ratings (image_id, rater)",
        ],
    );
    std::fs::write(
        dir.join("half.tsv"),
        "subject\tsuffix\trater\tcode\n\
         00\tFLAIR\tnew_rater\ta\n\
         01\tFLAIR\tnew_rater\tz\n\
         01\tFLAIR\tnew_rater\td\n\
         02\tFLAIR\tsecond_new\tk\n",
    )
    .expect("write");
    let failed = cdwqc(dir, &["ratings", "import", "half.tsv"]);
    assert!(!failed.status.success(), "{}", stdout(&failed));
    assert_eq!(csv_rows(dir, "select count(*) from ratings"), ["0"]);
    assert!(
        csv_rows(dir, "select name from raters").is_empty(),
        "a failed import adds no rater"
    );
    // The same file imports once the store accepts it.
    ok(dir, &["sql", "--write", "drop index one_rating_each"]);
    ok(dir, &["ratings", "import", "half.tsv"]);
    assert_eq!(
        csv_rows(dir, "select name from raters order by name"),
        ["new_rater", "second_new"]
    );
}

#[test]
fn the_same_bytes_from_another_rater_are_that_raters_ratings() {
    // Notebook files name no rater: two raters who gave the same labels hand in the
    // same bytes, and the second rater's ratings must not be taken for a re-import.
    let tmp = store(3);
    let dir = tmp.path();
    let input = "index\timg_id\tcode\tlabel\n0\tsub-00_FLAIR\tkaz\t2\n1\tsub-01_FLAIR\tr\t4\n2\tsub-02_FLAIR\taa\t3\n";
    std::fs::write(dir.join("ann.tsv"), input).expect("write");
    std::fs::write(dir.join("bob.tsv"), input).expect("write");
    ok(dir, &["ratings", "import", "ann.tsv", "--rater", "ann"]);
    let bob = ok(dir, &["ratings", "import", "bob.tsv", "--rater", "bob"]);
    assert!(bob.contains("3 ratings imported"), "{bob}");
    // Each file again, under either name: nothing saved twice.
    for (file, rater) in [("ann.tsv", "ann"), ("bob.tsv", "bob"), ("ann.tsv", "bob")] {
        let again = ok(dir, &["ratings", "import", file, "--rater", rater]);
        assert!(again.contains("already imported, nothing saved"), "{again}");
    }
    let counts = csv_rows(
        dir,
        "select rater, count(*) from ratings group by rater order by rater",
    );
    assert_eq!(counts, ["ann,3", "bob,3"]);
    // Ratings an earlier build saved name their file without a line: still matched.
    ok(
        dir,
        &[
            "sql",
            "--write",
            "update ratings set source = regexp_replace(source, ':[0-9]+$', '')",
        ],
    );
    let old = ok(dir, &["ratings", "import", "bob.tsv", "--rater", "bob"]);
    assert!(old.contains("already imported, nothing saved"), "{old}");
    // A rater exporting their ratings gets no one else's.
    for what in ["--latest", "--history"] {
        let mine = ok(
            dir,
            &[
                "ratings", "export", what, "--rater", "bob", "--format", "csv",
            ],
        );
        let raters: Vec<&str> = mine
            .lines()
            .skip(1)
            .map(|l| {
                l.split(',')
                    .nth(if what == "--history" { 7 } else { 6 })
                    .unwrap_or("")
            })
            .collect();
        assert_eq!(raters, ["bob", "bob", "bob"], "{mine}");
    }
}

#[test]
fn rows_skipped_for_a_missing_image_import_once_it_arrives() {
    let tmp = store(2);
    let dir = tmp.path();
    let input = "index\timg_id\tcode\tlabel\n0\tsub-00_FLAIR\tkaz\t2\n1\tsub-01_FLAIR\tr\t4\n2\tsub-07_FLAIR\taa\t3\n3\tsub-00_FLAIR\tr\t4\n";
    std::fs::write(dir.join("nb.tsv"), input).expect("write");
    let first = ok(
        dir,
        &[
            "ratings",
            "import",
            "nb.tsv",
            "--rater",
            "cid",
            "--skip-invalid",
        ],
    );
    assert!(first.contains("3 ratings imported"), "{first}");
    // Until the image is imported the file has nothing new.
    let again = ok(dir, &["ratings", "import", "nb.tsv", "--rater", "cid"]);
    assert!(again.contains("already imported, nothing saved"), "{again}");
    let anat = dir.join("w/sub-07/anat");
    std::fs::create_dir_all(&anat).expect("mkdir");
    std::fs::write(
        anat.join("sub-07_FLAIR.nii"),
        float_volume([6, 6, 6], |v| v as f32),
    )
    .expect("write");
    ok(dir, &["import", "w"]);
    let now = ok(dir, &["ratings", "import", "nb.tsv", "--rater", "cid"]);
    assert!(
        now.contains("1 ratings imported")
            && now.contains("3 saved by an earlier import of this file"),
        "{now}"
    );
    // Both ratings of sub-00 kept, none doubled.
    let rows = csv_rows(
        dir,
        "select i.rel_path, count(*) from ratings r join images i using (image_id) \
         group by 1 order by 1",
    );
    assert_eq!(
        rows,
        [
            "sub-00/anat/sub-00_FLAIR.nii,2",
            "sub-01/anat/sub-01_FLAIR.nii,1",
            "sub-07/anat/sub-07_FLAIR.nii,1"
        ]
    );
    let last = ok(dir, &["ratings", "import", "nb.tsv", "--rater", "cid"]);
    assert!(last.contains("already imported, nothing saved"), "{last}");
}

#[test]
fn a_quote_left_open_stops_the_import_and_names_the_lines() {
    let tmp = store(3);
    let dir = tmp.path();
    ok(dir, &["raters", "add", "ann"]);
    let text = "subject\tcode\tcomment\n00\tkaz\tfine\n01\tkaz\t\"ghosting?\n02\tr\tsharp\n";
    std::fs::write(dir.join("q.tsv"), text).expect("write");
    let out = cdwqc(dir, &["ratings", "import", "q.tsv", "--rater", "ann"]);
    assert!(!out.status.success());
    let said = stdout(&out);
    assert!(
        said.contains("q.tsv:3: a quote opened in this row"),
        "{said}"
    );
    assert!(said.contains("lines 3-4"), "{said}");
    assert_eq!(csv_rows(dir, "select count(*) from ratings"), ["0"]);
}

#[test]
fn each_widget_file_and_each_row_is_saved_once_whatever_is_imported_with_it() {
    let tmp = store(4);
    let dir = tmp.path();
    let widget = dir.join("widget");
    std::fs::create_dir(&widget).expect("mkdir");
    let rate = |name: &str, image: &str, score: f32| {
        std::fs::write(
            widget.join(name),
            format!("{{\"subject\": \"{image}\", \"rating\": {score}}}"),
        )
        .expect("write");
    };
    rate("a.json", "sub-00_FLAIR", 3.8);
    rate("b.json", "sub-01_FLAIR", 2.0);
    let first = ok(dir, &["ratings", "import", "widget", "--rater", "ann"]);
    assert!(first.contains("2 ratings imported"), "{first}");
    // A few more rated in the widget: the folder again saves the new one only, and a
    // file already in it saves nothing.
    rate("c.json", "sub-02_FLAIR", 3.0);
    let more = ok(dir, &["ratings", "import", "widget", "--rater", "ann"]);
    assert!(
        more.contains("1 ratings imported") && more.contains("2 saved by an earlier import"),
        "{more}"
    );
    let one = ok(
        dir,
        &["ratings", "import", "widget/a.json", "--rater", "ann"],
    );
    assert!(one.contains("already imported, nothing saved"), "{one}");
    assert_eq!(csv_rows(dir, "select count(*) from ratings"), ["3"]);
    // Two widget files of the same bytes, their images named by their file names:
    // two ratings, each saved once.
    let same = "{\"dataset\": \"ds\", \"rating\": 3.75}";
    let twins = dir.join("twins");
    std::fs::create_dir(&twins).expect("mkdir");
    std::fs::write(twins.join("ds_sub-00_FLAIR.json"), same).expect("write");
    ok(dir, &["ratings", "import", "twins", "--rater", "bob"]);
    std::fs::write(twins.join("ds_sub-03_FLAIR.json"), same).expect("write");
    let more = ok(dir, &["ratings", "import", "twins", "--rater", "bob"]);
    assert!(more.contains("1 ratings imported"), "{more}");
    assert_eq!(
        csv_rows(
            dir,
            "select i.subject, count(*) from ratings r join images i using (image_id) \
             where rater = 'bob' group by 1 order by 1"
        ),
        ["00,1", "03,1"]
    );
    // A rater named as an existing one in another case is a problem, not a new rater.
    let o = cdwqc(dir, &["ratings", "import", "widget", "--rater", "Ann"]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("differs from the existing rater ann in case only"));
    assert_eq!(csv_rows(dir, "select count(*) from raters"), ["2"]);
}

#[test]
fn two_rows_for_one_image_are_each_matched_to_their_own_save() {
    let tmp = store(2);
    let dir = tmp.path();
    // The same image twice (stem and path); the stem's row is skipped while the stem
    // names two images, then saved when it names one: never the other row again.
    let text = format!(
        "path\tcode\tcomment\nsub-00_FLAIR\tkaz\tfirst look\n{}\tr\tsecond look\n",
        dir.join("w/sub-00/anat/sub-00_FLAIR.nii").display()
    );
    std::fs::write(dir.join("two.tsv"), text).expect("write");
    let extra = dir.join("extra/sub-00/anat");
    std::fs::create_dir_all(&extra).expect("mkdir");
    std::fs::write(
        extra.join("sub-00_FLAIR.nii"),
        float_volume([6, 6, 6], |v| (v * 7) as f32),
    )
    .expect("write");
    ok(dir, &["import", "extra"]);
    let first = ok(
        dir,
        &[
            "ratings",
            "import",
            "two.tsv",
            "--rater",
            "ann",
            "--skip-invalid",
        ],
    );
    assert!(first.contains("1 ratings imported"), "{first}");
    std::fs::remove_file(extra.join("sub-00_FLAIR.nii")).expect("rm");
    ok(dir, &["import", "extra"]);
    let again = ok(dir, &["ratings", "import", "two.tsv", "--rater", "ann"]);
    assert!(again.contains("1 ratings imported"), "{again}");
    assert_eq!(
        csv_rows(dir, "select comment from ratings order by rating_id"),
        ["second look", "first look"]
    );
}

/// Runs `cdwqc rate --rater RATER` with `input` typed in; its standard output.
fn rate_lines(dir: &std::path::Path, rater: &str, input: &[u8]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(["rate", "--rater", rater])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn a_raters_history_numbers_their_own_saves_and_shows_no_one_elses() {
    // The store's rating ids count every rater's saves: in one rater's history, a gap
    // between two of their ids told them how many ratings others saved meanwhile.
    let tmp = store(3);
    let dir = tmp.path();
    rate_lines(dir, "zed", b"kaz\nq\n");
    let bob = "index\timg_id\tcode\tlabel\n0\tsub-00_FLAIR\tr\t4\n1\tsub-01_FLAIR\taa\t3\n2\tsub-02_FLAIR\tkaz\t2\n";
    std::fs::write(dir.join("bob.tsv"), bob).expect("write");
    ok(dir, &["ratings", "import", "bob.tsv", "--rater", "bob"]);
    // Another save, then its undo.
    rate_lines(dir, "zed", b"dd\nu\nq\n");
    let ids = csv_rows(dir, "select rating_id from ratings order by rating_id");
    assert_eq!(ids.len(), 6, "{ids:?}");
    let mine = ok(
        dir,
        &[
            "ratings",
            "export",
            "--history",
            "--rater",
            "zed",
            "--format",
            "csv",
        ],
    );
    let mut lines = mine.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no {name} column: {mine}"))
    };
    let (id, rater, undoes) = (column("rating_id"), column("rater"), column("undoes"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let got: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[id], r[rater], r[undoes])).collect();
    // Three saves of zed's numbered 1, 2, 3; the undo (3) names save 2.
    assert_eq!(
        got,
        [("1", "zed", ""), ("2", "zed", ""), ("3", "zed", "2")],
        "{mine}"
    );
}

#[test]
fn a_lowercase_rfc3339_time_is_saved_not_fatal_to_the_file() {
    // RFC 3339 allows `t` and `z`; the store refused them, and one such row made the
    // whole file fail, its valid rows and --skip-invalid included.
    let tmp = store(2);
    let dir = tmp.path();
    let file = "path\tcode\trated_at\nsub-00/anat/sub-00_FLAIR.nii\ta\t2024-01-01T00:00:00Z\nsub-01/anat/sub-01_FLAIR.nii\td\t2024-01-01t10:00:00z\n";
    std::fs::write(dir.join("t.tsv"), file).expect("write");
    let out = ok(dir, &["ratings", "import", "t.tsv", "--rater", "dan"]);
    assert!(out.contains("2 ratings imported"), "{out}");
    let mut times = csv_rows(
        dir,
        "select strftime(rated_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S') from ratings",
    );
    times.sort();
    assert_eq!(times, ["2024-01-01T00:00:00", "2024-01-01T10:00:00"]);
}

#[test]
fn a_rating_file_that_is_not_a_regular_file_or_too_large_is_refused_at_once() {
    // A FIFO no one writes hung the import while it held the store for writing, and
    // /dev/zero (or a sparse file of terabytes) filled memory.
    let tmp = store(1);
    let dir = tmp.path();
    let made = Command::new("mkfifo")
        .arg(dir.join("never.tsv"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let sparse = std::fs::File::create(dir.join("huge.tsv")).expect("create");
    sparse.set_len(1 << 40).expect("sparse file");
    for (file, reason) in [
        ("never.tsv", "not a regular file"),
        ("/dev/zero", "not a regular file"),
        ("huge.tsv", "MiB a rating file may hold"),
    ] {
        let o = cdwqc(dir, &["ratings", "import", file, "--rater", "ann"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains(file) && err.contains(reason), "{file}: {err}");
    }
    assert_eq!(csv_rows(dir, "select count(*) from ratings"), ["0"]);
}

#[test]
fn an_exported_history_imports_as_it_ended_and_quality_only_ratings_round_trip() {
    let tmp = store(3);
    let dir = tmp.path();
    // zed saves two ratings and undoes the second.
    rate_lines(dir, "zed", b"kaz\nq\n");
    rate_lines(dir, "zed", b"dd\nu\nq\n");
    // ann's ratings are quality-only (MRIQC style): a class and nothing else.
    let ann = "path\tusable\tquality\nsub-00/anat/sub-00_FLAIR.nii\t1\tmedium\nsub-01/anat/sub-01_FLAIR.nii\t1\tgood\n";
    std::fs::write(dir.join("ann.tsv"), ann).expect("write");
    ok(dir, &["ratings", "import", "ann.tsv", "--rater", "ann"]);
    let in_force = "select rater, coalesce(code, ''), coalesce(quality, '') from ratings_latest \
                    join images using (image_id) order by rater, rel_path";
    let before = csv_rows(dir, in_force);
    assert_eq!(before.len(), 3, "{before:?}");
    // The dashboard's and `rate`'s times carry microseconds; an export cut them to whole
    // seconds, so a history moved to another store came back with other times.
    let zed_times = "select strftime(rated_at, '%Y-%m-%dT%H:%M:%S.%f') from ratings_latest \
                     where rater = 'zed'";
    let zed_before = csv_rows(dir, zed_times);
    assert_eq!(zed_before.len(), 1, "{zed_before:?}");
    assert!(!zed_before[0].ends_with(".000000"), "{zed_before:?}");
    let history = dir.join("zed_history.tsv");
    let latest = dir.join("latest.tsv");
    let (history, latest) = (
        history.to_str().expect("utf-8"),
        latest.to_str().expect("utf-8"),
    );
    ok(
        dir,
        &[
            "ratings",
            "export",
            "--history",
            "--rater",
            "zed",
            "--out",
            history,
        ],
    );
    ok(
        dir,
        &[
            "ratings", "export", "--latest", "--rater", "ann", "--out", latest,
        ],
    );
    // Into a store of the same images: the undone rating stayed withdrawn (it came back
    // in force, the undo counted as a missing value), and ann's classes came back (the
    // export had no quality column: "motion is empty").
    let other = store(3);
    let fresh = other.path();
    let out = ok(fresh, &["ratings", "import", history, "--rater", "zed"]);
    assert!(
        out.contains("1 ratings imported") && out.contains("2 rows withdrawn by an undo"),
        "{out}"
    );
    ok(fresh, &["ratings", "import", latest]);
    assert_eq!(csv_rows(fresh, in_force), before);
    assert_eq!(csv_rows(fresh, zed_times), zed_before);
    // A part of a history whose undo names a save it does not hold says so.
    let text = std::fs::read_to_string(history).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(2);
    std::fs::write(fresh.join("part.tsv"), lines.join("\n") + "\n").expect("write");
    let o = crate::support::cdwqc(fresh, &["ratings", "import", "part.tsv", "--rater", "zed"]);
    let out = crate::support::stdout(&o);
    assert!(
        out.contains("undoes rating 2 of rater zed, which this file does not hold"),
        "{out}"
    );
}

#[test]
fn a_queue_and_its_new_raters_are_saved_together_even_when_stdout_is_gone() {
    // With stdout closed (`| head -1`), printing "added rater" ended the command after
    // the raters were saved and before the queue was.
    let tmp = store(4);
    let dir = tmp.path();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let status = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(["queue", "create", "--raters", "ann,bob", "--seed", "3"])
        .current_dir(dir)
        .stdout(writer)
        .stderr(Stdio::null())
        .status()
        .expect("run");
    // However the closed pipe ends it, the queue and its raters are both there.
    let _ = status;
    let queued = csv_rows(dir, "select distinct rater from queue_items order by rater");
    assert_eq!(queued, ["ann", "bob"]);
    let raters = csv_rows(dir, "select name from raters order by name");
    assert_eq!(raters, ["ann", "bob"]);
}

#[test]
fn a_file_naming_no_rater_is_one_error_not_a_problem_per_line() {
    // A 300-row file without a rater column printed the same "no rater" problem 300
    // times, and with --skip-invalid "imported" nothing with exit 0.
    let tmp = store(3);
    let dir = tmp.path();
    let rows: String = (0..3)
        .map(|i| format!("sub-{i:02}/anat/sub-{i:02}_FLAIR.nii\ta\n"))
        .collect();
    std::fs::write(dir.join("r.tsv"), format!("path\tcode\n{rows}")).expect("write");
    for extra in [None, Some("--skip-invalid")] {
        let mut args = vec!["ratings", "import", "r.tsv"];
        args.extend(extra);
        let o = cdwqc(dir, &args);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert_eq!(err.matches("no row names its rater").count(), 1, "{err}");
        assert!(
            err.contains("r.tsv") && err.contains("--rater NAME"),
            "{err}"
        );
        assert_eq!(stdout(&o), "", "{extra:?}");
    }
    assert_eq!(csv_rows(dir, "select count(*) from ratings"), ["0"]);
    // A rater column with some cells empty keeps its problems per line.
    std::fs::write(
        dir.join("some.tsv"),
        "path\tcode\trater\nsub-00/anat/sub-00_FLAIR.nii\ta\tann\nsub-01/anat/sub-01_FLAIR.nii\ta\t\n",
    )
    .expect("write");
    let o = cdwqc(dir, &["ratings", "import", "some.tsv"]);
    assert!(
        stdout(&o).contains("some.tsv:3: no rater"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_export_to_a_closed_pipe_ends_quietly_as_sql_does() {
    // `cdwqc ratings export | head` printed "error: writing the ratings: Broken pipe"
    // and exited 1, where `cdwqc sql ... | head` ends quietly.
    use std::os::unix::process::ExitStatusExt;
    let tmp = store(3);
    let dir = tmp.path();
    rate_lines(dir, "zed", b"kaz\nq\n");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(["ratings", "export", "--history"])
        .current_dir(dir)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_rating_file_edited_and_imported_again_saves_only_its_changed_rows() {
    // A rater's spreadsheet grows each week and is imported again: every row was saved
    // again, and the old rows overruled a correction made in between.
    let tmp = store(3);
    let dir = tmp.path();
    let row = |i: usize, code: &str| format!("sub-{i:02}/anat/sub-{i:02}_FLAIR.nii\t{code}\n");
    let version = |rows: &[(usize, &str)]| {
        let mut text = String::from("path\tcode\n");
        for (i, code) in rows {
            text.push_str(&row(*i, code));
        }
        std::fs::write(dir.join("ann.tsv"), text).expect("write");
        ok(dir, &["ratings", "import", "ann.tsv", "--rater", "ann"])
    };
    let in_force = || {
        csv_rows(
            dir,
            "select code from ratings_latest join images using (image_id) \
             where rater = 'ann' order by rel_path",
        )
    };
    version(&[(0, "k"), (1, "kaz")]);
    // A correction from another file.
    std::fs::write(dir.join("fix.tsv"), format!("path\tcode\n{}", row(0, "aa"))).expect("write");
    ok(dir, &["ratings", "import", "fix.tsv", "--rater", "ann"]);
    assert_eq!(in_force(), ["aa", "kaz"]);
    // The file grows by one row: that row only is saved; the correction stands.
    let out = version(&[(0, "k"), (1, "kaz"), (2, "dd")]);
    assert!(
        out.contains("1 ratings imported") && out.contains("2 rows unchanged"),
        "{out}"
    );
    assert_eq!(in_force(), ["aa", "kaz", "dd"]);
    assert_eq!(csv_rows(dir, "select count(*) from ratings"), ["4"]);
    // A row changed in the file is a new rating, and so is a row changed back.
    version(&[(0, "k"), (1, "r"), (2, "dd")]);
    assert_eq!(in_force(), ["aa", "r", "dd"]);
    let out = version(&[(0, "k"), (1, "kaz"), (2, "dd"), (2, "dd")]);
    assert!(out.contains("1 ratings imported"), "{out}");
    assert_eq!(in_force(), ["aa", "kaz", "dd"]);
    // A pair rated twice in the file is judged by its last row: unchanged, neither
    // row is saved (saving the first alone put it in force).
    let out = version(&[(0, "k"), (1, "kaz"), (2, "r"), (2, "dd")]);
    assert!(
        out.contains("0 ratings imported") && out.contains("4 rows unchanged"),
        "{out}"
    );
    assert_eq!(in_force(), ["aa", "kaz", "dd"]);
    // A version set back to earlier bytes undoes the later version's change.
    version(&[(0, "k"), (1, "r"), (2, "dd")]);
    assert_eq!(in_force(), ["aa", "r", "dd"]);
    let out = version(&[(0, "k"), (1, "kaz"), (2, "r"), (2, "dd")]);
    assert!(out.contains("1 ratings imported"), "{out}");
    assert_eq!(in_force(), ["aa", "kaz", "dd"]);
    // Another site's file of the same name is another file: its save is not this
    // file's last version, and this file's unchanged rows do not overrule it.
    std::fs::create_dir(dir.join("site")).expect("mkdir");
    std::fs::write(
        dir.join("site/ann.tsv"),
        format!("path\tcode\n{}", row(2, "z")),
    )
    .expect("write");
    ok(
        dir,
        &["ratings", "import", "site/ann.tsv", "--rater", "ann"],
    );
    assert_eq!(in_force(), ["aa", "kaz", "z"]);
    let out = version(&[(0, "k"), (1, "kaz"), (2, "dd"), (0, "k")]);
    assert!(out.contains("0 ratings imported"), "{out}");
    assert_eq!(in_force(), ["aa", "kaz", "z"]);
    // Another rater's file of the same name is compared with that rater's saves only.
    std::fs::write(dir.join("ann.tsv"), format!("path\tcode\n{}", row(0, "k"))).expect("write");
    let out = ok(dir, &["ratings", "import", "ann.tsv", "--rater", "bob"]);
    assert!(out.contains("1 ratings imported"), "{out}");
}
