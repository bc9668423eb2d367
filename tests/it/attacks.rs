//! Hostile SQL and paths against `cdwqc sql` and the dashboard's SQL console, and
//! blind rating mode probed for other raters' work: every attack is refused, and the
//! store still holds every image and rating it held before (and is still a DuckDB
//! store). See docs/security.md for what a session may touch.

use std::path::Path;
use std::time::Duration;

use crate::support::{cdwqc, ok, stderr, stdout};
use crate::tui::{Tmux, store_with_rater};

/// The images and rating rows of the store in `dir`.
fn counts(dir: &Path) -> (i64, i64) {
    let out = ok(
        dir,
        &[
            "sql",
            "select (select count(*) from images) as i, (select count(*) from ratings) as r",
            "--format",
            "csv",
        ],
    );
    let line = out.lines().nth(1).unwrap_or_default().to_string();
    let (i, r) = line
        .split_once(',')
        .unwrap_or_else(|| panic!("counts: {out}"));
    (
        i.parse().expect("image count"),
        r.parse().expect("rating count"),
    )
}

/// The store still starts like a DuckDB file and holds what it held.
fn assert_intact(dir: &Path, before: (i64, i64)) {
    let bytes = std::fs::read(dir.join("cdwqc.duckdb")).expect("the store is still there");
    assert!(
        bytes.len() > 12 && &bytes[8..12] == b"DUCK",
        "the store is no longer a DuckDB file ({} bytes)",
        bytes.len()
    );
    assert_eq!(counts(dir), before, "images and ratings changed");
}

/// Four images, raters ann and bob, and one rating by bob.
fn store() -> (tempfile::TempDir, (i64, i64)) {
    let (tmp, _db) = store_with_rater();
    ok(
        tmp.path(),
        &[
            "sql",
            "--write",
            "insert into raters (name) values ('bob');
             insert into ratings (image_id, rater, usable, gado, motion, contrast, noise, code,
                                  protocol_version, source, rated_at, saved_at)
             select min(image_id), 'bob', true, false, 1, 0, 0, 'a', '1', 'test',
                    now(), now() from images",
        ],
    );
    let before = counts(tmp.path());
    assert_eq!(before, (4, 1));
    (tmp, before)
}

/// Refusals of a statement that would reach a file: by its kind, or, in a read-only
/// session, by DuckDB already when binding it (its file system is off there).
const NO_FILE: &str = "which cdwqc never runs|has been disabled by configuration";

/// Runs `cdwqc args`, expects a failure whose message holds `reason` (or one of its
/// `|`-separated parts), and an intact store.
fn refused(dir: &Path, before: (i64, i64), args: &[&str], reason: &str) {
    let o = cdwqc(dir, args);
    assert!(
        !o.status.success(),
        "cdwqc {args:?} succeeded:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        reason.split('|').any(|r| stderr(&o).contains(r)),
        "cdwqc {args:?}: expected {reason:?} in\n{}",
        stderr(&o)
    );
    assert_intact(dir, before);
}

#[test]
fn read_only_sql_changes_no_file() {
    let (tmp, before) = store();
    let dir = tmp.path();
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "secret").expect("write");
    std::os::unix::fs::symlink(&secret, dir.join("link-out.txt")).expect("symlink");
    let never = NO_FILE;
    let attacks: Vec<(String, &str)> = vec![
        // Replaced the store with a 4-byte CSV before.
        (
            "copy (select 1 as a) to 'cdwqc.duckdb' (format csv)".into(),
            never,
        ),
        ("copy (select 1 as a) to 'x.csv'".into(), never),
        ("export database 'dump'".into(), never),
        ("attach 'cdwqc.duckdb' as again".into(), never),
        ("attach 'other.duckdb' as other".into(), never),
        ("install httpfs".into(), never),
        ("load parquet".into(), never),
        ("set enable_external_access = true".into(), never),
        ("reset enable_external_access".into(), never),
        ("set lock_configuration = false".into(), never),
        ("pragma enable_checkpoint_on_shutdown".into(), never),
        ("checkpoint".into(), never),
        (
            "explain analyze copy (select 1 as a) to 'x.csv'".into(),
            never,
        ),
        (
            "prepare p as copy (select 1 as a) to 'x.csv'; execute p".into(),
            never,
        ),
        ("select * from checkpoint()".into(), "refused"),
        (
            "select * from enable_logging(storage = 'file', storage_path = 'logs')".into(),
            "refused",
        ),
        (
            "select * from enable_profiling(format = 'json', save_location = 'p.json'); select 1"
                .into(),
            "refused",
        ),
        ("select * from query('select 1')".into(), "refused"),
        // Files outside the store, beside it, through `..` and through a link.
        (
            format!("select * from read_text('{}')", secret.display()),
            "disabled",
        ),
        ("select * from read_blob('link-out.txt')".into(), "disabled"),
        (
            "select * from read_text('w/../cdwqc.duckdb')".into(),
            "disabled",
        ),
        ("select * from glob('*')".into(), "disabled"),
        // Quoting that fooled a hand-written splitter into running what followed.
        (
            "select $$'$$; commit; create table pwned as select 1 as x; select '$$'".into(),
            "TRANSACTION: a read-only session runs queries only",
        ),
        (
            "select E'\\''; copy (select 1 as a) to 'cdwqc.duckdb' (format csv); select E'\\''"
                .into(),
            never,
        ),
        (
            "select 1; delete from ratings".into(),
            "DELETE: a read-only session runs queries only",
        ),
    ];
    // Nested deeper than a JSON parser goes by default (128 levels): the check must
    // still find the function.
    let nested = |depth: usize, inner: &str| {
        (0..depth).fold(inner.to_string(), |q, _| format!("select * from ({q})"))
    };
    let mut attacks = attacks;
    for depth in [40, 120] {
        attacks.push((nested(depth, "select * from query('select 42')"), "refused"));
        attacks.push((nested(depth, "select * from checkpoint()"), "refused"));
    }
    attacks.push(("select * from enable_peg_parser()".into(), "refused"));
    // A PRAGMA makes DuckDB serialize no tree for the whole script.
    for call in [
        "select * from query('select 42')",
        "select * from checkpoint()",
        "from enable_peg_parser()",
        "select * from query_table('raters')",
        "select 1 as \"--\", * from query('select 42')",
        "/* /* */ ' */ select * from query('select 42') -- '",
    ] {
        attacks.push((format!("pragma version; {call}"), "refused"));
    }
    for (query, reason) in &attacks {
        refused(dir, before, &["sql", query], reason);
    }
    // With files allowed, nested file logging is refused as well.
    let logging = nested(
        60,
        "select * from enable_logging(level = 'trace', storage = 'file', storage_path = 'logs')",
    );
    refused(
        dir,
        before,
        &["sql", "--allow-files", &format!("{logging}; select 1")],
        "refused",
    );
    // A PRAGMA on its own still runs.
    assert!(ok(dir, &["sql", "pragma version"]).contains("library_version"));
    for made in ["x.csv", "dump", "other.duckdb", "logs", "p.json"] {
        assert!(!dir.join(made).exists(), "{made} was written");
    }
    let tables = ok(
        dir,
        &[
            "sql",
            "select count(*) as n from duckdb_tables() where table_name = 'pwned'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(tables, "n\n0\n");
    // Reading files is opt-in, and still changes none.
    let read = ok(
        dir,
        &[
            "sql",
            "select content from read_text('link-out.txt')",
            "--allow-files",
            "--format",
            "csv",
        ],
    );
    assert_eq!(read, "content\nsecret\n");
    refused(
        dir,
        before,
        &[
            "sql",
            "--allow-files",
            "copy (select 1 as a) to 'cdwqc.duckdb' (format csv)",
        ],
        never,
    );
}

#[test]
fn writing_sql_never_reaches_a_file() {
    let (tmp, before) = store();
    let dir = tmp.path();
    // Refused by kind, or already by DuckDB when binding it (no folder is open to it).
    let never = "which cdwqc never runs|Permission Error|already attached";
    for (query, reason) in [
        (
            "copy (select 1 as a) to 'cdwqc.duckdb' (format csv, use_tmp_file false)",
            never,
        ),
        (
            "copy ratings to 'cdwqc.duckdb.wal' (format csv, use_tmp_file false)",
            never,
        ),
        // Checked before the first statement runs: the DROP never happens.
        (
            "drop table ratings; copy (select 1) to 'cdwqc.duckdb' (format csv)",
            never,
        ),
        ("export database 'dump'", never),
        ("attach 'cdwqc.duckdb' as again", never),
        ("attach 'other.duckdb' as other", never),
        ("set lock_configuration = false", never),
        ("reset enable_external_access", never),
        ("install httpfs", never),
        (
            "select * from enable_logging(storage = 'file', storage_path = 'cdwqc.duckdb.wal')",
            "refused",
        ),
    ] {
        refused(dir, before, &["sql", "--write", query], reason);
    }
    for made in ["dump", "other.duckdb", "cdwqc.duckdb.wal"] {
        assert!(!dir.join(made).exists(), "{made} was written");
    }
    refused(
        dir,
        before,
        &["sql", "--write", "--allow-files", "select 1"],
        "--allow-files is for read-only sessions",
    );
}

#[test]
fn out_never_writes_the_store() {
    let (tmp, before) = store();
    let dir = tmp.path();
    std::os::unix::fs::symlink(dir.join("cdwqc.duckdb"), dir.join("link.csv")).expect("symlink");
    std::fs::hard_link(dir.join("cdwqc.duckdb"), dir.join("hard.csv")).expect("hard link");
    std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling.csv")).expect("symlink");
    let copy = dir.join("copy.duckdb");
    std::fs::copy(dir.join("cdwqc.duckdb"), &copy).expect("copy");
    for (out, format) in [
        ("cdwqc.duckdb", "csv"),
        ("w/../cdwqc.duckdb", "csv"),
        ("link.csv", "csv"),
        ("hard.csv", "tsv"),
        ("cdwqc.duckdb.wal", "csv"),
        ("dangling.csv", "json"),
        ("cdwqc.duckdb", "parquet"),
        ("link.csv", "parquet"),
        ("copy.duckdb", "csv"),
    ] {
        refused(
            dir,
            before,
            &["sql", "select 1 as a", "--format", format, "--out", out],
            "refused",
        );
    }
    assert!(!dir.join("nowhere").exists());
    refused(
        dir,
        before,
        &["ratings", "export", "--latest", "--out", "cdwqc.duckdb"],
        "refused",
    );
    // Another store's write-ahead log holds saves its file does not have yet.
    std::fs::write(dir.join("copy.duckdb.wal"), b"saves not yet checkpointed").expect("wal");
    for args in [
        &["sql", "select 1 as a", "--out", "copy.duckdb.wal"][..],
        &["ratings", "export", "--latest", "--out", "copy.duckdb.wal"],
    ] {
        refused(dir, before, args, "write-ahead log");
    }
    assert_eq!(
        std::fs::read(dir.join("copy.duckdb.wal")).expect("wal"),
        b"saves not yet checkpointed"
    );
    // Every other file a command writes: a report given the store's name by mistake,
    // and links to the store planted where exports go.
    for args in [
        &["report", "agreement", "--html", "cdwqc.duckdb"][..],
        &["report", "agreement", "--html", "link.csv"],
        &["report", "agreement", "--html", "copy.duckdb"],
        &[
            "ratings",
            "export",
            "--notebook",
            "--rater",
            "bob",
            "--out",
            "hard.csv",
        ],
    ] {
        refused(dir, before, args, "refused");
    }
    // A refused report file is refused before the report is computed or printed.
    for kind in [&["agreement"][..], &["compare", "none"]] {
        let args: Vec<&str> = ["report"]
            .into_iter()
            .chain(kind.iter().copied())
            .chain(["--html", "cdwqc.duckdb"])
            .collect();
        let o = cdwqc(dir, &args);
        assert!(!o.status.success(), "cdwqc {args:?} succeeded");
        assert!(stderr(&o).contains("refused"), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "cdwqc {args:?} printed before refusing");
    }
    let groups = dir.join("groups");
    std::fs::create_dir(&groups).expect("mkdir");
    for name in ["group_T1w.tsv", "group_FLAIR.tsv", "group_unknown.tsv"] {
        std::os::unix::fs::symlink(dir.join("cdwqc.duckdb"), groups.join(name)).expect("link");
    }
    ok(dir, &["iqm"]);
    refused(dir, before, &["iqm", "--export", "groups"], "refused");
    // A report to a new name is written.
    ok(dir, &["report", "agreement", "--html", "agreement.html"]);
    assert!(
        std::fs::read_to_string(dir.join("agreement.html"))
            .expect("report")
            .contains("<html")
    );
    // Ordinary outputs still work.
    ok(
        dir,
        &["sql", "select 1 as a", "--format", "csv", "--out", "r.csv"],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("r.csv")).expect("r.csv"),
        "a\n1\n"
    );
    ok(
        dir,
        &[
            "sql",
            "select 2 as a",
            "--format",
            "parquet",
            "--out",
            "r.parquet",
        ],
    );
    assert_eq!(
        ok(
            dir,
            &[
                "sql",
                "select a from read_parquet('r.parquet')",
                "--allow-files",
                "--format",
                "csv",
            ]
        ),
        "a\n2\n"
    );
    assert_intact(dir, before);
}

fn dashboard(tmp: &Path, rater: Option<&str>) -> Tmux {
    let command = format!(
        "CDWQC_KEYS=/dev/null CDWQC_SQL_HISTORY={} exec {} --db {} tui{}",
        tmp.join("history.jsonl").display(),
        env!("CARGO_BIN_EXE_cdwqc"),
        tmp.join("cdwqc.duckdb").display(),
        rater.map(|r| format!(" --rater {r}")).unwrap_or_default()
    );
    let tmux = Tmux::start(&format!("attack-{}", rater.unwrap_or("all")), tmp, &command);
    tmux.run(&["set-option", "-s", "escape-time", "0"]);
    tmux
}

#[test]
fn dashboard_console_refuses_attacks() {
    let (tmp, before) = store();
    let dir = tmp.path();
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "secret").expect("write");
    std::os::unix::fs::symlink(&secret, dir.join("link-out.txt")).expect("symlink");
    let tmux = dashboard(dir, None);
    tmux.wait_for("Dashboard");
    tmux.keys(&["5"]);
    tmux.wait_for("read-only");
    // Each attack shows words that no earlier one showed (the text typed is lower
    // case): its kind refused, or DuckDB's refusal when binding it.
    let run = |query: &str, shows: &str| {
        tmux.keys(&["C-u"]);
        tmux.keys(&["-l", query]);
        tmux.keys(&["C-r"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let screen = tmux.screen();
            if shows.split('|').any(|s| screen.contains(s)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{query}: never showed {shows:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    run(
        "select $$'$$; commit; create table pwned as select 1 as x; select '$$'",
        "TRANSACTION",
    );
    run("delete from ratings", "DELETE");
    run(
        &format!("select * from read_text('{}')", secret.display()),
        "Permission",
    );
    run(
        "select * from enable_logging(storage = 'file', storage_path = 'logs')",
        "refused",
    );
    tmux.keys(&["C-t"]);
    tmux.wait_for("WRITING ON");
    run(
        "copy (select 1 as a) to 'cdwqc.duckdb' (format csv)",
        "COPY|Permission",
    );
    run("attach 'cdwqc.duckdb' as again", "ATTACH|already attached");
    run("set enable_external_access = true", "SET");
    tmux.keys(&["C-t"]);
    tmux.keys(&["Escape"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys(&["q"]);
    tmux.wait_for_exit();
    assert_intact(dir, before);
    assert!(!dir.join("logs").exists());
    assert_eq!(
        ok(
            dir,
            &[
                "sql",
                "select count(*) as n from duckdb_tables() where table_name = 'pwned'",
                "--format",
                "csv",
            ],
        ),
        "n\n0\n"
    );
}

#[test]
fn blind_dashboard_offers_no_sql_and_no_other_ratings() {
    let (tmp, before) = store();
    let dir = tmp.path();
    let tmux = dashboard(dir, Some("ann"));
    let screen = tmux.wait_for("4 Rate");
    for hidden in ["5 SQL", "6 Reports", "7 Jobs"] {
        assert!(!screen.contains(hidden), "{screen}");
    }
    tmux.keys(&["5"]);
    tmux.wait_for("not available in blind");
    tmux.keys(&["C-t"]);
    tmux.keys(&["2"]);
    let screen = tmux.wait_for("ratings hidden");
    assert!(!screen.contains("rated"), "{screen}");
    assert!(!screen.contains("bob"), "{screen}");
    assert!(!screen.contains("WRITING"), "{screen}");
    tmux.keys(&["1"]);
    let screen = tmux.wait_for("Dashboard");
    assert!(!screen.contains("bob"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for_exit();
    assert_intact(dir, before);
}

#[test]
fn bids_export_never_writes_through_a_planted_link() {
    // The export wrote each file under a fixed temporary name with a write that follows
    // links: `dataset_description.partial` linked to the store turned the store into
    // 471 bytes of JSON.
    let (tmp, before) = store();
    let dir = tmp.path();
    let out = dir.join("w/derivatives/cdwqc");
    std::fs::create_dir_all(&out).expect("mkdir");
    let store = dir.join("cdwqc.duckdb");
    for name in [
        "dataset_description.partial",
        "dataset_description.json",
        "README.partial",
        "ratings.partial",
        "ratings.tsv",
    ] {
        std::os::unix::fs::symlink(&store, out.join(name)).expect("symlink");
    }
    std::fs::hard_link(&store, out.join("ratings.json")).expect("hard link");
    ok(dir, &["ratings", "export", "--bids-derivatives", "w"]);
    assert_intact(dir, before);
    for name in ["dataset_description.json", "ratings.tsv", "ratings.json"] {
        let path = out.join(name);
        assert!(!path.is_symlink(), "{name} is still a link");
        let bytes = std::fs::read(&path).expect("written");
        assert!(!bytes.starts_with(&[0; 8]), "{name}");
        assert!(
            std::str::from_utf8(&bytes).is_ok(),
            "{name} is not the export's text"
        );
    }
}

#[test]
fn bids_export_stays_in_the_dataset_and_off_the_store() {
    let (tmp, before) = store();
    let dir = tmp.path();
    // A derivatives folder that is a link to the store's folder sent the export there.
    std::fs::create_dir_all(dir.join("w/derivatives")).expect("mkdir");
    std::os::unix::fs::symlink(dir, dir.join("w/derivatives/cdwqc")).expect("symlink");
    std::fs::write(dir.join("README.md"), "mine").expect("write");
    let o = cdwqc(dir, &["ratings", "export", "--bids-derivatives", "w"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("README.md")).expect("read"),
        "mine"
    );
    assert_intact(dir, before);
    // A store kept in the export's folder under one of its names is refused, not
    // renamed over.
    std::fs::remove_file(dir.join("w/derivatives/cdwqc")).expect("unlink");
    let folder = dir.join("w/derivatives/cdwqc");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::copy(dir.join("cdwqc.duckdb"), folder.join("ratings.tsv")).expect("copy");
    let db = folder.join("ratings.tsv");
    let db = db.to_str().expect("utf-8 path");
    let o = cdwqc(
        dir,
        &["--db", db, "ratings", "export", "--bids-derivatives", "w"],
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("is the store"), "{}", stderr(&o));
    let bytes = std::fs::read(folder.join("ratings.tsv")).expect("still there");
    assert_eq!(&bytes[8..12], b"DUCK");
}

#[test]
fn parquet_outputs_never_write_through_a_planted_link() {
    // Over an existing file DuckDB's COPY wrote `tmp_NAME` first, through any link
    // planted under that name; and `ratings export --consensus --format parquet` skipped
    // the output checks altogether.
    let (tmp, before) = store();
    let dir = tmp.path();
    let store = dir.join("cdwqc.duckdb");
    std::fs::write(dir.join("q.parquet"), b"old").expect("write");
    for name in ["tmp_q.parquet", "tmp_c.parquet", "c.parquet"] {
        std::os::unix::fs::symlink(&store, dir.join(name)).expect("symlink");
    }
    ok(
        dir,
        &[
            "sql",
            "select 1 as a",
            "--format",
            "parquet",
            "--out",
            "q.parquet",
        ],
    );
    assert_intact(dir, before);
    let o = cdwqc(
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
    // Refused (the name is a link to the store) or written beside it: never into it.
    let _ = o;
    assert_intact(dir, before);
    assert!(
        std::fs::read(dir.join("q.parquet"))
            .expect("written")
            .starts_with(b"PAR1")
    );
}

#[test]
fn a_store_path_naming_another_kind_of_file_is_refused_and_the_file_kept() {
    // DuckDB opened these as an in-memory database over the file: `init`, `import` and
    // `raters add` reported success, and every write was gone when the command ended.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let files: [(&str, &[u8]); 3] = [
        ("notes.csv", b"a,b\n1,2\n"),
        ("w.json", b"[{\"a\": 1}]\n"),
        ("w.parquet", b"PAR1 not really parquet PAR1"),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write");
        for args in [
            vec!["--db", name, "init"],
            vec!["--db", name, "raters", "add", "ann"],
        ] {
            let err = crate::support::failure(&cdwqc(dir, &args));
            assert!(
                err.contains(name) && err.contains("not a DuckDB database"),
                "{args:?}: {err}"
            );
        }
        assert_eq!(std::fs::read(dir.join(name)).expect("read"), bytes);
    }
    // A FIFO as the store is refused at once, never opened.
    let fifo = dir.join("fifo.duckdb");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let err = crate::support::failure(&cdwqc(dir, &["--db", "fifo.duckdb", "init"]));
    assert!(err.contains("not a DuckDB database"), "{err}");
    let err = crate::support::failure(&cdwqc(dir, &["--db", ":memory:", "init"]));
    assert!(err.contains("no file"), "{err}");
    // A real store still opens, and a new name still makes one.
    ok(dir, &["--db", "new.duckdb", "init"]);
    ok(dir, &["--db", "new.duckdb", "raters", "add", "ann"]);
    assert!(ok(dir, &["--db", "new.duckdb", "raters", "list"]).contains("ann"));
}

#[test]
fn image_outputs_never_replace_the_store_its_input_or_a_device() {
    let (tmp, before) = store();
    let dir = tmp.path();
    let input = dir.join("in.nii");
    std::fs::copy(crate::support::external("anatomical.nii"), &input).expect("copy");
    let original = std::fs::read(&input).expect("read");
    std::fs::write(dir.join("cdwqc.duckdb.wal"), b"").expect("wal");
    for (flag, name, reason) in [
        ("--out", "cdwqc.duckdb", "refused"),
        ("--corrected", "cdwqc.duckdb", "refused"),
        ("--out", "cdwqc.duckdb.wal", "refused"),
        ("--out", "in.nii", "is the input image"),
        ("--out", "/dev/null", "refused"),
        ("--out", "nowhere/", "names a folder"),
    ] {
        refused(dir, before, &["register", "in.nii", flag, name], reason);
    }
    assert_eq!(std::fs::read(&input).expect("read"), original);
    assert!(
        std::fs::metadata("/dev/null")
            .map(|m| !m.is_file())
            .unwrap_or(true)
    );
    // The montage of a synthetic warehouse, before any work.
    refused(
        dir,
        before,
        &["synth", "--from", "wh", "--montage", "cdwqc.duckdb"],
        "ending in .png",
    );
    refused(
        dir,
        before,
        &["synth", "--from", "wh", "--montage", "in.nii"],
        "ending in .png",
    );
    assert_eq!(std::fs::read(&input).expect("read"), original);
    // A full output is an error with its reason, not a crash.
    let full = std::process::Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(["raters", "list"])
        .current_dir(dir)
        .stdout(std::fs::File::create("/dev/full").expect("/dev/full"))
        .output()
        .expect("runs");
    assert_eq!(full.status.code(), Some(1), "{}", stderr(&full));
    assert!(stderr(&full).contains("No space left"), "{}", stderr(&full));
}

#[test]
fn rater_names_differing_in_case_only_are_not_added_on_the_way() {
    let (tmp, before) = store();
    let dir = tmp.path();
    refused(
        dir,
        before,
        &["queue", "create", "--raters", "ann,ANN", "--name", "q"],
        "in case only",
    );
    let o = cdwqc(dir, &["rate", "--rater", "Bob"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("in case only"), "{}", stderr(&o));
    let raters = ok(
        dir,
        &[
            "sql",
            "select string_agg(name, '+' order by name) from raters",
            "--format",
            "csv",
        ],
    );
    assert_eq!(raters.lines().nth(1), Some("ann+bob"), "{raters}");
    // Two new names in one list, differing in case only.
    refused(
        dir,
        before,
        &[
            "queue",
            "create",
            "--raters",
            "newbie,NEWBIE",
            "--name",
            "q2",
        ],
        "in case only",
    );
    // Added on purpose, the name stands.
    ok(dir, &["raters", "add", "Bob"]);
}

#[test]
fn a_writing_script_that_fails_half_way_says_what_it_saved() {
    let (tmp, _) = store();
    let dir = tmp.path();
    let o = cdwqc(
        dir,
        &[
            "sql",
            "--write",
            "insert into raters (name) values ('zz2'); select error('boom')",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("boom"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("statements before the failing one were saved"),
        "{}",
        stderr(&o)
    );
    let n = ok(
        dir,
        &[
            "sql",
            "select count(*) from raters where name = 'zz2'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(n.lines().nth(1), Some("1"));
    // A script the checks refuse ran nothing, and says only what was wrong.
    let o = cdwqc(
        dir,
        &[
            "sql",
            "--write",
            "insert into raters (name) values ('zz3'); insert into nosuch values (1)",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nosuch"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("were saved"), "{}", stderr(&o));
    let n = ok(
        dir,
        &[
            "sql",
            "select count(*) from raters where name = 'zz3'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(n.lines().nth(1), Some("0"));
}

#[test]
fn thread_counts_past_any_machine_are_refused() {
    let (tmp, before) = store();
    for command in ["infer", "train", "job"] {
        let mut args = vec![command, "--threads", "100000"];
        if command == "job" {
            args.push("plan.json");
        }
        let o = cdwqc(tmp.path(), &args);
        assert!(!o.status.success(), "{command}");
        assert!(stderr(&o).contains("100000"), "{command}: {}", stderr(&o));
        assert_intact(tmp.path(), before);
    }
}
