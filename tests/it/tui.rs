//! `cdwqc tui` end to end: the real binary in a fixed-size tmux session, driven with
//! keys; ratings checked in the store afterwards, also after a SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{external, ok};

/// A tmux server of its own (its own socket), killed when the test ends.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn start(name: &str, dir: &Path, command: &str) -> Self {
        let version = Command::new("tmux").arg("-V").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "tmux is not installed but the dashboard tests drive the binary in it: \
             run scripts/setup.sh (or `apt-get install -y tmux`)"
        );
        let socket = format!("cdwqc-{name}-{}", std::process::id());
        let tmux = Self { socket };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "100",
            "-y",
            "30",
            "-c",
            &dir.display().to_string(),
            command,
        ]);
        tmux
    }

    pub(crate) fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "t"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub(crate) fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits until the screen shows `text`; fails with the screen otherwise.
    pub(crate) fn wait_for(&self, text: &str) -> String {
        self.wait_longer_for(text, Duration::from_secs(20))
    }

    pub(crate) fn wait_longer_for(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard never showed {text:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn wait_for_exit(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.alive() {
            assert!(Instant::now() < deadline, "cdwqc tui did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A store with four real images and the rater ann.
pub(crate) fn store_with_rater() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = tmp.path().join("w");
    std::fs::create_dir_all(&w).expect("mkdir");
    for name in [
        "anatomical.nii",
        "standard.nii.gz",
        "example_nifti2.nii.gz",
        "reoriented_anat_moved.nii",
    ] {
        std::fs::copy(external(name), w.join(name)).expect("copy");
    }
    ok(tmp.path(), &["init"]);
    ok(tmp.path(), &["import", "w"]);
    ok(tmp.path(), &["raters", "add", "ann"]);
    let db = tmp.path().join("cdwqc.duckdb");
    (tmp, db)
}

fn tui_command(db: &Path) -> String {
    format!(
        "CDWQC_KEYS=/dev/null exec {} --db {} tui --rater ann",
        env!("CARGO_BIN_EXE_cdwqc"),
        db.display()
    )
}

fn sql(dir: &Path, query: &str) -> String {
    ok(dir, &["sql", query, "--format", "csv"])
}

/// The image id in "saved image N as ..." on the status line.
fn saved_image(screen: &str) -> i64 {
    let (_, rest) = screen
        .split_once("saved image ")
        .unwrap_or_else(|| panic!("no save shown:\n{screen}"));
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no image id after 'saved image':\n{screen}"))
}

/// Waits as long as the dashboard wants an image on screen before it saves it.
fn looked() {
    std::thread::sleep(cdwqc::tui::rate::MIN_VIEW + std::time::Duration::from_millis(100));
}

#[test]
fn rates_three_images_with_keys_and_quits() {
    let (tmp, db) = store_with_rater();
    let tmux = Tmux::start("rate", tmp.path(), &tui_command(&db));
    tmux.wait_for("code: ");
    tmux.keys(&["a"]);
    looked();
    // Enter twice, as a key bounces: the second is refused, the next image unseen.
    tmux.keys(&["Enter", "Enter"]);
    tmux.wait_for("was on screen for");
    tmux.wait_for("saved this session: 1");
    // An invalid key is refused in place and saves nothing.
    tmux.keys(&["r", "a"]);
    tmux.wait_for("'ra' refused");
    looked();
    tmux.keys(&["Enter"]);
    tmux.wait_for("saved this session: 2");
    tmux.keys(&["k", "z", "z"]);
    looked();
    tmux.keys(&["Enter"]);
    tmux.wait_for("saved this session: 3");
    tmux.keys(&["q"]);
    tmux.wait_for_exit();
    assert_eq!(
        sql(tmp.path(), "select count(*) as n from ratings_latest"),
        "n\n3\n"
    );
    assert_eq!(
        sql(
            tmp.path(),
            "select code, usable, gado, contrast, source from ratings_latest order by rating_id"
        ),
        "code,usable,gado,contrast,source\na,true,false,0,tui\nr,false,false,0,tui\nkzz,true,true,2,tui\n"
    );
}

#[test]
fn every_save_shown_survives_sigkill() {
    let (tmp, db) = store_with_rater();
    let tmux = Tmux::start("kill", tmp.path(), &tui_command(&db));
    tmux.wait_for("code: ");
    let mut shown = Vec::new();
    for (n, code) in ["d", "aa", "k"].iter().enumerate() {
        let keys: Vec<String> = code.chars().map(String::from).collect();
        let args: Vec<&str> = keys.iter().map(String::as_str).collect();
        tmux.keys(&args);
        looked();
        tmux.keys(&["Enter"]);
        let screen = tmux.wait_for(&format!("saved this session: {}", n + 1));
        shown.push(saved_image(&screen));
    }
    let pid = tmux.run(&["display-message", "-p", "-t", "t", "#{pane_pid}"]);
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    tmux.wait_for_exit();
    let stored = sql(
        tmp.path(),
        "select image_id from ratings_latest where rater = 'ann' order by image_id",
    );
    let stored: Vec<i64> = stored
        .lines()
        .skip(1)
        .filter_map(|l| l.parse().ok())
        .collect();
    shown.sort_unstable();
    assert_eq!(stored, shown, "every rating shown as saved is in the store");
    // The dashboard's rate-and-next keeps the image list's summaries exact.
    crate::support::assert_summaries_exact(tmp.path(), &db.display().to_string());
}

/// Moving through 100,000 images and rating through the app state (no terminal).
/// Run: cargo nextest run --release --run-ignored only tui::bench --no-capture
#[test]
#[ignore = "benchmark: builds a 100,000-image store"]
fn bench_moving_through_100k_images_and_rating() {
    use cdwqc::imaging::preview::Gray8;
    use cdwqc::store::Store;
    use cdwqc::tui::app::{App, Event, Request, Response};
    use cdwqc::tui::handle_now;
    use cdwqc::tui::keys::KeyMap;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut store = Store::create(&tmp.path().join("big.duckdb")).expect("store");
    let built = Instant::now();
    store
        .conn()
        .execute_batch(
            "INSERT INTO images (path, root, rel_path, status, subject, session, suffix,
                                 file_size, mtime_ns, dim_x, dim_y, dim_z, orientation)
             SELECT '/w/sub-' || i || '/anat/sub-' || i || '_FLAIR.nii.gz', '/w', 'x' || i,
                    CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'ok' END, i::VARCHAR, '01',
                    CASE WHEN i % 2 = 0 THEN 'T1w' ELSE 'FLAIR' END, 1, 0, 176, 240, 256, 'RAS'
             FROM range(1, 100001) t(i);
             INSERT INTO raters (name) VALUES ('ann'), ('bob');
             INSERT INTO ratings (image_id, rater, usable, motion, code, protocol_version, source)
             SELECT i, 'bob', true, 1, 'a', '1', 'bench' FROM range(1, 100001, 5) t(i);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities)
             SELECT 'bench-run', i, 'usable', CASE WHEN i % 7 = 0 THEN 'reject' ELSE 'usable' END,
                    [0.8, 0.2] FROM range(1, 100001) t(i);",
        )
        .expect("rows");
    let side = 160usize;
    let picture = Gray8 {
        width: side,
        height: side,
        pixels: (0..side * side).map(|i| ((i * 7919) % 251) as u8).collect(),
    };
    let png = picture.to_png().expect("png");
    store
        .conn()
        .execute(
            "INSERT INTO previews SELECT i, p.plane, 160, 160, ?
             FROM range(1, 100001) t(i),
                  (VALUES ('axial'), ('coronal'), ('sagittal')) p(plane)",
            duckdb::params![png],
        )
        .expect("previews");
    println!(
        "built 100,000 images, 300,000 previews ({} B each), 20,000 ratings, 100,000 predictions in {:.1} s",
        png.len(),
        built.elapsed().as_secs_f64()
    );

    let press = |app: &mut App, store: &mut Store, code: KeyCode| {
        handle_now(
            app,
            store,
            Event::Key(KeyEvent::new(code, KeyModifiers::NONE)),
        );
    };
    let mut app = App::new(KeyMap::default(), None);
    handle_now(&mut app, &mut store, Event::Tick);
    let opened = Instant::now();
    press(&mut app, &mut store, KeyCode::Char('2'));
    println!(
        "open the images view (first page, count, detail): {:.1} ms",
        opened.elapsed().as_secs_f64() * 1e3
    );
    let steps = 1000;
    let started = Instant::now();
    for _ in 0..steps {
        press(&mut app, &mut store, KeyCode::Down);
    }
    println!(
        "Down x{steps} (each: detail + previews; a new page every 200 rows): {:.2} ms per step",
        started.elapsed().as_secs_f64() * 1e3 / f64::from(steps)
    );
    let started = Instant::now();
    for _ in 0..steps {
        press(&mut app, &mut store, KeyCode::PageDown);
    }
    println!(
        "PageDown x{steps} (20 rows each): {:.2} ms per step",
        started.elapsed().as_secs_f64() * 1e3 / f64::from(steps)
    );
    let started = Instant::now();
    press(&mut app, &mut store, KeyCode::End);
    println!(
        "End (jump to row {}): {:.1} ms",
        app.images.selected + 1,
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    for c in ['t', 'x', 's'] {
        press(&mut app, &mut store, KeyCode::Char(c));
    }
    println!(
        "three filter changes (status, rated, sequence): {:.1} ms per change",
        started.elapsed().as_secs_f64() * 1e3 / 3.0
    );

    let mut app = App::new(KeyMap::default(), Some("ann".into()));
    // Timed saves, not a person looking: no wait before a save.
    app.rate.min_view = std::time::Duration::ZERO;
    handle_now(&mut app, &mut store, Event::Tick);
    let started = Instant::now();
    press(&mut app, &mut store, KeyCode::Char('4'));
    println!(
        "open the Rate view (ann's 500 next unrated images, first previews): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let saves = 200;
    let started = Instant::now();
    for _ in 0..saves {
        press(&mut app, &mut store, KeyCode::Char('a'));
        press(&mut app, &mut store, KeyCode::Enter);
    }
    println!(
        "rate x{saves} ('a' + Enter: durable save, next image shown, the one after prefetched): \
         {:.2} ms per image",
        started.elapsed().as_secs_f64() * 1e3 / f64::from(saves)
    );
    assert_eq!(app.rate.saved.len(), saves as usize);

    // The dashboard on the reader thread, with and without the agreement panel, once
    // a second rater has labelled bob's 20,000 images.
    store
        .conn()
        .execute_batch(
            "INSERT INTO raters (name) VALUES ('cyd');
             INSERT INTO ratings (image_id, rater, usable, motion, code, protocol_version, source)
             SELECT i, 'cyd', i % 3 <> 0, i % 3, 'a', '1', 'bench' FROM range(1, 100001, 5) t(i);",
        )
        .expect("second rater");
    for agreement in [false, true] {
        let runs = 10;
        let started = Instant::now();
        for _ in 0..runs {
            let response = cdwqc::tui::serve(
                &store,
                Request::Dashboard {
                    agreement,
                    ratings: true,
                },
            );
            assert!(matches!(
                response,
                Response::Dashboard { result: Ok(_), .. }
            ));
        }
        println!(
            "dashboard request ({}agreement, 20,000 images rated twice): {:.1} ms",
            if agreement { "with " } else { "without " },
            started.elapsed().as_secs_f64() * 1e3 / f64::from(runs)
        );
    }
}

/// The SQL view on the real event loop: the query runs on its own thread, a huge
/// result is capped, a long query is interrupted while the other views keep working,
/// writes are refused, and the history file gets every query.
#[test]
fn sql_view_runs_caps_cancels_and_keeps_history() {
    let (tmp, db) = store_with_rater();
    let history = tmp.path().join("state/history.jsonl");
    let command = format!(
        "CDWQC_KEYS=/dev/null CDWQC_SQL_HISTORY={} exec {} --db {} tui",
        history.display(),
        env!("CARGO_BIN_EXE_cdwqc"),
        db.display()
    );
    let tmux = Tmux::start("sql", tmp.path(), &command);
    // tmux holds Esc back for 500 ms to see whether a sequence follows.
    tmux.run(&["set-option", "-s", "escape-time", "0"]);
    tmux.wait_for("Dashboard");
    tmux.keys(&["5"]);
    tmux.wait_for("read-only");
    // q, digits and ? type text in the editor.
    tmux.keys(&["-l", "select count(*) as q_images_4 from images -- ?"]);
    tmux.keys(&["C-r"]);
    let screen = tmux.wait_for("1 row");
    assert!(screen.contains("q_images_4"), "{screen}");
    tmux.keys(&["C-u"]);
    tmux.keys(&["-l", "select * from range(1000000000)"]);
    tmux.keys(&["C-r"]);
    tmux.wait_for("first 10,000 rows");
    tmux.keys(&["C-u"]);
    tmux.keys(&[
        "-l",
        "select count(*) from range(1000000000000) t(i) where i % 7 = 3",
    ]);
    tmux.keys(&["C-r"]);
    tmux.wait_for("running");
    // Other views answer while the query runs.
    // Esc on its own: followed at once by a key, a terminal reads Alt and that key.
    tmux.keys(&["Escape"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys(&["2"]);
    tmux.wait_for("Images 1/4");
    tmux.keys(&["5", "C-k"]);
    tmux.wait_for("Interrupted");
    tmux.keys(&["Enter", "C-u"]);
    tmux.keys(&["-l", "insert into raters (name) values ('zed')"]);
    tmux.keys(&["C-r"]);
    tmux.wait_for("The view is read-only");
    tmux.keys(&["Escape"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys(&["q"]);
    tmux.wait_for_exit();
    assert_eq!(
        sql(tmp.path(), "select count(*) as n from raters"),
        "n\n1\n"
    );
    let lines = std::fs::read_to_string(&history).expect("history file");
    assert_eq!(lines.lines().count(), 4, "{lines}");
    assert!(
        lines.lines().last().is_some_and(|l| l.contains("'zed'")),
        "{lines}"
    );
}

/// The Jobs view on the real binary: a training job from the form runs in a worker
/// process and is recorded (epochs, held-out predictions, status); an inference job
/// predicts with it; a second training job is stopped with `c` and is resumable; a
/// third is stopped by quitting (q twice), and the dashboard waits for its checkpoint.
#[test]
fn jobs_train_predict_stop_and_quit_in_tmux() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    crate::train::tiny_rated_warehouse(dir);
    let db = dir.join("cdwqc.duckdb");
    let command = format!(
        "CDWQC_KEYS=/dev/null exec {} --db {} tui",
        env!("CARGO_BIN_EXE_cdwqc"),
        db.display()
    );
    let tmux = Tmux::start("jobs", dir, &command);
    tmux.wait_for("1 Dashboard");
    tmux.keys(&["7"]);
    tmux.wait_for("no job yet");
    // Form: job, task, method, preset, epochs. Preset tiny, 2 epochs.
    tmux.keys(&["n"]);
    tmux.wait_for("New job");
    tmux.keys(&[
        "Down", "Down", "Down", "Right", "Down", "Left", "Left", "Left",
    ]);
    tmux.wait_for("‹ 2 ›");
    tmux.keys(&["Enter"]);
    let minute = Duration::from_secs(120);
    let screen = tmux.wait_longer_for("test BA", minute);
    assert!(screen.contains("usable-ssda-tiny-1"), "{screen}");
    assert!(
        screen.contains("Loss") && screen.contains("validation BA"),
        "{screen}"
    );

    // Predict every FLAIR image with the new run.
    tmux.keys(&["n", "Right"]);
    tmux.wait_for("predict with a model");
    tmux.keys(&["Down", "Down"]);
    tmux.wait_for("sequence");
    for _ in 0..3 {
        if tmux.screen().contains("‹ FLAIR ›") {
            break;
        }
        tmux.keys(&["Right"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    tmux.wait_for("‹ FLAIR ›");
    tmux.keys(&["Enter"]);
    tmux.wait_longer_for("16 images predicted (0 failed)", minute);
    // Training cached every FLAIR image's tensor: the network had every thread, as
    // `cdwqc infer` gives it.
    tmux.wait_for("every tensor was");

    // A long training job, stopped after its first epoch with `c`.
    tmux.keys(&[
        "n", "Down", "Down", "Down", "Right", "Down", "Right", "Right",
    ]);
    tmux.wait_for("‹ 7 ›");
    tmux.keys(&["Enter"]);
    tmux.wait_longer_for("epoch   1:", minute);
    tmux.keys(&["c"]);
    tmux.wait_longer_for("interrupted after", minute);

    // A third job, stopped by quitting: the first q asks, the second stops and quits.
    // The cpu-small grid makes each epoch of this warehouse take about a second, and
    // early stopping ends a run five epochs after its best at the soonest, so quitting
    // right after the first epoch always lands inside training, not after it.
    tmux.keys(&[
        "n", "Down", "Down", "Right", "Down", "Right", "Right", "Down",
    ]);
    tmux.keys(&["PageUp"; 40]);
    tmux.wait_for("‹ 405 ›");
    tmux.wait_for("‹ cpu-small ›");
    tmux.keys(&["Enter"]);
    // The new job is the one shown: its title above its own log's first epoch.
    let deadline = Instant::now() + minute;
    loop {
        let screen = tmux.screen();
        if screen.contains("target-only (cpu-small, 405 epochs)") && screen.contains("epoch   1:") {
            break;
        }
        assert!(Instant::now() < deadline, "no first epoch: {screen}");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["q"]);
    tmux.wait_for("q again stops them");
    tmux.keys(&["q"]);
    let deadline = Instant::now() + minute;
    while tmux.alive() {
        assert!(Instant::now() < deadline, "the dashboard did not quit");
        std::thread::sleep(Duration::from_millis(200));
    }

    let runs = sql(
        dir,
        "select run_id, status, (select count(*) from epochs e where e.run_id = r.run_id) > 0 as epochs,
                (select count(*) from predictions p where p.run_id = r.run_id) as predictions,
                coalesce(error, '') as error
         from runs r order by started_at",
    );
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 4, "{runs}");
    assert!(
        lines[1].starts_with("usable-ssda-tiny-1,completed,true,16"),
        "{runs}"
    );
    assert!(
        lines[2].starts_with("usable-ssda-tiny-2,interrupted,true,0"),
        "{runs}"
    );
    assert!(
        lines[3].starts_with("usable-target-only-cpu-small-1,interrupted,"),
        "{runs}"
    );
    // Every dashboard job has its row: what it ran and how it ended.
    let jobs = sql(
        dir,
        "select kind, status, run_id, args like '%job%.json%' as plan from jobs order by job_id",
    );
    assert_eq!(
        jobs,
        "kind,status,run_id,plan\n\
         train,completed,usable-ssda-tiny-1,true\n\
         infer,completed,usable-ssda-tiny-1,true\n\
         train,cancelled,usable-ssda-tiny-2,true\n\
         train,cancelled,usable-target-only-cpu-small-1,true\n"
    );
    // The stopped runs left checkpoints that `cdwqc train --resume` continues from.
    assert!(
        dir.join("models/runs/usable-ssda-tiny-2/state.json")
            .is_file()
    );
}

/// The image list's query as it was before pages were cut from `images` first: the
/// reference the 1,000,000-image benchmark measures the list's keys against.
const IMAGES_FILTERED_BEFORE: &str = r#"
-- The images matching the browser's filters, ordered by image_id, with how many
-- raters have a rating in force on each and the newest `usable` prediction.
-- $1 sequence, $2 status, $3 rated (true/false), $4 subject search,
-- $5 predicted usable label, $6 true = only images where that prediction differs from
-- a rater's usable label in force: NULL = any.
WITH rated AS (
    SELECT image_id, count(*) AS raters FROM ratings_latest GROUP BY image_id
),
predicted AS (
    SELECT image_id, label FROM (
        SELECT image_id, label,
               row_number() OVER (PARTITION BY image_id
                                  ORDER BY predicted_at DESC, run_id) AS newest
        FROM predictions
        WHERE task = 'usable' AND label IS NOT NULL
    ) WHERE newest = 1
),
disagreeing AS (
    SELECT DISTINCT l.image_id
    FROM rater_labels l JOIN predicted p USING (image_id)
    WHERE l.usable_label <> p.label
)
SELECT i.image_id, coalesce(i.subject, ''), coalesce(i.session, ''),
       coalesce(i.suffix, ''), i.status,
       CASE WHEN i.dim_x IS NULL THEN '' ELSE concat_ws('x', i.dim_x, i.dim_y, i.dim_z) END,
       coalesce(i.orientation, ''), coalesce(r.raters, 0), coalesce(p.label, '')
FROM images i
LEFT JOIN rated r USING (image_id)
LEFT JOIN predicted p USING (image_id)
WHERE (CAST($1 AS VARCHAR) IS NULL OR i.suffix = $1)
  AND (CAST($2 AS VARCHAR) IS NULL OR i.status = $2)
  AND (CAST($3 AS BOOLEAN) IS NULL OR (coalesce(r.raters, 0) > 0) = $3)
  AND (CAST($4 AS VARCHAR) IS NULL OR i.subject ILIKE '%' || $4 || '%')
  AND (CAST($5 AS VARCHAR) IS NULL OR p.label = $5)
  AND (CAST($6 AS BOOLEAN) IS NULL OR NOT $6
       OR i.image_id IN (SELECT image_id FROM disagreeing))
"#;

/// CPU time of this process, every thread (DuckDB's included), in ms: on a loaded
/// machine the wall time mostly measures waiting.
fn process_cpu_ms() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// Times the reference query: the count (unless known) and one page, as the image
/// list asked for them before.
fn before_page(
    store: &cdwqc::store::Store,
    filter: [Option<&str>; 4],
    offset: i64,
    count: bool,
) -> f64 {
    let [sequence, rated, subject, predicted] = filter;
    let rated = rated.map(|r| r == "true");
    let started = Instant::now();
    if count {
        let total: i64 = store
            .conn()
            .prepare(&format!("SELECT count(*) FROM ({IMAGES_FILTERED_BEFORE})"))
            .expect("count")
            .query_row(
                duckdb::params![
                    sequence,
                    None::<String>,
                    rated,
                    subject,
                    predicted,
                    None::<bool>
                ],
                |r| r.get(0),
            )
            .expect("count");
        assert!(total > 0);
    }
    let rows = store
        .conn()
        .prepare(&format!(
            "{IMAGES_FILTERED_BEFORE}\nORDER BY i.image_id LIMIT 200 OFFSET $7"
        ))
        .expect("page")
        .query_map(
            duckdb::params![
                sequence,
                None::<String>,
                rated,
                subject,
                predicted,
                None::<bool>,
                offset
            ],
            |r| r.get::<_, i64>(0),
        )
        .expect("page")
        .count();
    assert!(rows > 0);
    started.elapsed().as_secs_f64() * 1e3
}

/// The dashboard on a store of 1,000,000 images (half FLAIR, half T1w), 3,000,000
/// ratings by three raters, 1,000,000 predictions and previews for one image in 20,
/// built set-based in SQL, driven through the app state without a terminal. Each key
/// is timed with every read it causes served on this thread, so the time is what the
/// reader thread needs before the screen shows the answer.
/// Run: cargo nextest run --release --run-ignored only tui::bench_one_million --no-capture
#[test]
#[ignore = "benchmark: builds a 1,000,000-image store"]
fn bench_one_million_images() {
    use cdwqc::imaging::preview::Gray8;
    use cdwqc::store::Store;
    use cdwqc::tui::app::{App, Event, Request, Response};
    use cdwqc::tui::handle_now;
    use cdwqc::tui::keys::KeyMap;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut store = Store::create(&tmp.path().join("million.duckdb")).expect("store");
    let built = Instant::now();
    store
        .conn()
        .execute_batch(
            "INSERT INTO images (path, root, rel_path, status, subject, session, suffix,
                                 file_size, mtime_ns, dim_x, dim_y, dim_z, orientation)
             SELECT '/w/sub-' || i || '/anat/sub-' || i || '_' || s || '.nii.gz', '/w',
                    'sub-' || i || '/anat/sub-' || i || '_' || s || '.nii.gz',
                    CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'ok' END, i::VARCHAR, '01', s,
                    1, 0, 176, 240, 256, 'RAS'
             FROM (SELECT i, CASE WHEN i % 2 = 0 THEN 'T1w' ELSE 'FLAIR' END AS s
                   FROM generate_series(1, 1000000) t(i));
             INSERT INTO raters (name) VALUES ('ann'), ('r0'), ('r1'), ('r2');
             INSERT INTO ratings (image_id, rater, usable, motion, contrast, noise, code,
                                  review_later, protocol_version, source)
             SELECT i, 'r' || k, (i + k) % 15 <> 0, (i + k) % 3, 0, 0, 'a',
                    (i * 7 + k) % 1000 = 0, '1', 'bench'
             FROM generate_series(0, 2) r(k), generate_series(1, 1000000) t(i);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities)
             SELECT 'bench-run', i, 'usable',
                    CASE WHEN i % 7 = 0 THEN 'reject' ELSE 'usable' END, [0.8, 0.2]
             FROM generate_series(1, 1000000) t(i);
             CHECKPOINT;",
        )
        .expect("rows");
    // A smooth picture with some texture compresses like a real preview slice.
    let side = 160usize;
    let picture = Gray8 {
        width: side,
        height: side,
        pixels: (0..side * side)
            .map(|i| ((i % side + i / side) / 2 + (i * 7919) % 7) as u8)
            .collect(),
    };
    let png = picture.to_png().expect("png");
    store
        .conn()
        .execute(
            "INSERT INTO previews SELECT i, p.plane, 160, 160, ?
             FROM generate_series(1, 1000000) t(i),
                  (VALUES ('axial'), ('coronal'), ('sagittal')) p(plane)
             WHERE i % 20 = 1 OR i <= 2000 OR i > 998000",
            duckdb::params![png],
        )
        .expect("previews");
    store
        .conn()
        .execute_batch("CHECKPOINT")
        .expect("checkpoint");
    println!(
        "built 1,000,000 images, 3,000,000 ratings, 1,000,000 predictions, 162,000 previews \
         ({} B each) in {:.1} s",
        png.len(),
        built.elapsed().as_secs_f64()
    );
    // The rows went in behind the store layer: their per-image summaries are computed
    // as migration 011 computes them for an existing store.
    assert!(!store.summaries_fresh(), "rows added by hand are seen");
    let repaired = Instant::now();
    cdwqc::store::summaries::repair(store.conn()).expect("summaries");
    assert!(store.summaries_fresh());
    println!(
        "per-image summaries of 1,000,000 images computed in {:.1} s",
        repaired.elapsed().as_secs_f64()
    );

    // Before: what the same steps asked of the store until now, in this run.
    let mut before: Vec<(&str, f64)> = Vec::new();
    let (started, cpu) = (Instant::now(), process_cpu_ms());
    let full = cdwqc::tui::serve(
        &store,
        Request::Dashboard {
            agreement: true,
            ratings: true,
        },
    );
    assert!(matches!(full, Response::Dashboard { result: Ok(_), .. }));
    let full_ms = started.elapsed().as_secs_f64() * 1e3;
    println!("before: first paint CPU {:.1} ms", process_cpu_ms() - cpu);
    before.push(("first paint", full_ms));
    before.push((
        "view switch to Images",
        before_page(&store, [None; 4], 0, true),
    ));
    before.push((
        "a new page (every 10 PageDown)",
        before_page(&store, [None; 4], 200, false),
    ));
    before.push(("End", before_page(&store, [None; 4], 999_800, false)));
    before.push((
        "sequence filter (s)",
        before_page(&store, [Some("FLAIR"), None, None, None], 0, true),
    ));
    before.push((
        "rated filter (x)",
        before_page(&store, [None, Some("true"), None, None], 0, true),
    ));
    before.push((
        "subject search",
        before_page(&store, [None, None, Some("4242"), None], 0, true),
    ));
    before.push((
        "model filter (m, predicted usable)",
        before_page(&store, [None, None, None, Some("usable")], 0, true),
    ));
    for (what, ms) in &before {
        println!("before: {what}: {ms:.1} ms");
    }

    let press = |app: &mut App, store: &mut Store, code: KeyCode| {
        handle_now(
            app,
            store,
            Event::Key(KeyEvent::new(code, KeyModifiers::NONE)),
        );
    };
    let draw = |app: &App| {
        let mut terminal = Terminal::new(TestBackend::new(130, 36)).expect("terminal");
        terminal
            .draw(|frame| cdwqc::tui::ui::draw(frame, app))
            .expect("draw");
    };
    let rows: std::cell::RefCell<Vec<(String, f64, f64)>> = Default::default();
    let timed = |what: &str, app: &mut App, store: &mut Store, keys: &[KeyCode]| {
        let (started, cpu) = (Instant::now(), process_cpu_ms());
        for &k in keys {
            press(app, store, k);
        }
        draw(app);
        let per_key = keys.len().max(1) as f64;
        let ms = started.elapsed().as_secs_f64() * 1e3 / per_key;
        let cpu = (process_cpu_ms() - cpu) / per_key;
        println!("{what}: {ms:.1} ms (CPU {cpu:.1} ms)");
        rows.borrow_mut().push((what.to_string(), ms, cpu));
    };

    // The first paint: every summary but the rating progress and agreement, which
    // the loop asks of a second connection once the first answer is in.
    let (started, cpu) = (Instant::now(), process_cpu_ms());
    let mut app = App::new(KeyMap::default(), None);
    let mut asked = Vec::new();
    cdwqc::tui::handle(&mut app, &mut store, Event::Tick, &mut |r| asked.push(r));
    for request in std::mem::take(&mut asked) {
        let response = cdwqc::tui::serve(&store, request);
        cdwqc::tui::handle(&mut app, &mut store, Event::Loaded(response), &mut |r| {
            asked.push(r)
        });
    }
    draw(&app);
    let first = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "first paint (dashboard, rating counts being refined): {first:.1} ms (CPU {:.1} ms)",
        process_cpu_ms() - cpu
    );
    assert!(matches!(&app.dashboard, Some(Ok(s)) if s.refining));
    let started = Instant::now();
    assert_eq!(
        asked.len(),
        1,
        "the refined counts are asked for: {asked:?}"
    );
    for request in std::mem::take(&mut asked) {
        let response = cdwqc::tui::serve(&store, request);
        cdwqc::tui::handle(&mut app, &mut store, Event::Loaded(response), &mut |r| {
            asked.push(r)
        });
    }
    draw(&app);
    let refined = started.elapsed().as_secs_f64() * 1e3;
    println!("rating progress and agreement refined (second connection): {refined:.1} ms");
    assert!(matches!(&app.dashboard, Some(Ok(s)) if !s.refining && s.raters.len() == 4));
    timed(
        "view switch to Images (page, count, detail)",
        &mut app,
        &mut store,
        &[KeyCode::Char('2')],
    );
    assert_eq!(app.images.page.as_ref().map(|p| p.total), Some(1_000_000));
    timed("Down (one row)", &mut app, &mut store, &[KeyCode::Down; 50]);
    timed("PageDown", &mut app, &mut store, &[KeyCode::PageDown; 20]);
    timed(
        "End (jump to the last row)",
        &mut app,
        &mut store,
        &[KeyCode::End],
    );
    assert_eq!(app.images.selected, 999_999);
    timed("Home", &mut app, &mut store, &[KeyCode::Home]);
    timed(
        "sequence filter (s)",
        &mut app,
        &mut store,
        &[KeyCode::Char('s')],
    );
    timed(
        "status filter (t)",
        &mut app,
        &mut store,
        &[KeyCode::Char('t')],
    );
    timed(
        "rated filter (x)",
        &mut app,
        &mut store,
        &[KeyCode::Char('x')],
    );
    timed(
        "clear filters (c)",
        &mut app,
        &mut store,
        &[KeyCode::Char('c')],
    );
    timed(
        "model filter (m, predicted usable)",
        &mut app,
        &mut store,
        &[KeyCode::Char('m')],
    );
    assert_eq!(app.images.page.as_ref().map(|p| p.total), Some(857_143));
    timed(
        "model filter (m, predicted reject)",
        &mut app,
        &mut store,
        &[KeyCode::Char('m')],
    );
    timed(
        "model filter (m, model-rater disagreement)",
        &mut app,
        &mut store,
        &[KeyCode::Char('m')],
    );
    timed(
        "clear filters (c)",
        &mut app,
        &mut store,
        &[KeyCode::Char('c')],
    );
    // Quality metrics for every image, added now so that the keys above are timed as
    // before (the Images view reads the per-scanner groups once, on a thread of its own
    // in the dashboard, served here on this one). One image in 200 has an outlying FBER.
    let (started, cpu) = (Instant::now(), process_cpu_ms());
    store
        .conn()
        .execute_batch(
            "INSERT INTO iqms (image_id, iqm_version, contrast, seconds, snr_total, snrd_total,
                               cnr, cjv, efc, fber, wm2max, qi_1, fwhm_avg, inu_range)
             SELECT i, 1, 'T1w', 0.1, 10 + (i * 37) % 11, 20 + (i * 13) % 9,
                    2 + (i * 7) % 5 * 0.1, 0.4 + (i * 11) % 7 * 0.01, 0.5 + (i * 3) % 5 * 0.01,
                    CASE WHEN i % 200 = 1 THEN 1e9 ELSE 2000 + (i * 17) % 100 END,
                    0.6 + (i * 5) % 7 * 0.01, 0.001 * ((i * 19) % 5), 3 + (i * 23) % 7 * 0.1,
                    0.1 + (i * 29) % 9 * 0.01
             FROM generate_series(1, 1000000) t(i) WHERE i % 50 <> 0;
             CHECKPOINT;",
        )
        .expect("iqms");
    println!(
        "980,000 IQM rows added in {:.1} s (CPU {:.1} ms)",
        started.elapsed().as_secs_f64(),
        process_cpu_ms() - cpu
    );
    // What the list's connection did on the first `o` before the flags were computed
    // with the groups, and the groups' thread now (groups alone, then with the flags).
    let (started, cpu) = (Instant::now(), process_cpu_ms());
    store
        .conn()
        .execute_batch(&format!(
            "CREATE OR REPLACE TEMP TABLE before_flags AS\n{}\n;",
            include_str!("../../sql/store/image_iqm_flags.sql")
        ))
        .expect("flags");
    println!(
        "before: the first o's flags on the list's connection: {:.1} ms (CPU {:.1} ms)",
        started.elapsed().as_secs_f64() * 1e3,
        process_cpu_ms() - cpu
    );
    let (started, cpu) = (Instant::now(), process_cpu_ms());
    store.iqm_groups().expect("groups");
    println!(
        "the groups alone (their own thread in the dashboard): {:.1} ms (CPU {:.1} ms)",
        started.elapsed().as_secs_f64() * 1e3,
        process_cpu_ms() - cpu
    );
    let (started, cpu) = (Instant::now(), process_cpu_ms());
    store
        .iqm_groups_with_shared_flags(u64::MAX)
        .expect("groups and flags");
    println!(
        "the groups and every image's flags (their own thread): {:.1} ms (CPU {:.1} ms)",
        started.elapsed().as_secs_f64() * 1e3,
        process_cpu_ms() - cpu
    );
    // Metrics written by another process show after a refresh (Ctrl-L), whose groups'
    // request computes the flags; served here on this thread, so timed with the key.
    let (started, cpu) = (Instant::now(), process_cpu_ms());
    handle_now(
        &mut app,
        &mut store,
        Event::Key(KeyEvent::new(KeyCode::Char('l'), KeyModifiers::CONTROL)),
    );
    draw(&app);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "refresh (Ctrl-L) with the groups and flags served in line: {ms:.1} ms (CPU {:.1} ms)",
        process_cpu_ms() - cpu
    );
    timed(
        "IQM outlier filter (o), first: flags computed with the groups",
        &mut app,
        &mut store,
        &[KeyCode::Char('o')],
    );
    assert_eq!(app.images.page.as_ref().map(|p| p.total), Some(5_000));
    timed(
        "PageDown in the outliers",
        &mut app,
        &mut store,
        &[KeyCode::PageDown; 20],
    );
    timed(
        "IQM filter (o, no outlier)",
        &mut app,
        &mut store,
        &[KeyCode::Char('o')],
    );
    timed(
        "IQM filter off (o)",
        &mut app,
        &mut store,
        &[KeyCode::Char('o')],
    );
    timed(
        "IQM outlier filter (o) again",
        &mut app,
        &mut store,
        &[KeyCode::Char('o')],
    );
    timed(
        "clear filters (c)",
        &mut app,
        &mut store,
        &[KeyCode::Char('c')],
    );
    let search: Vec<KeyCode> = "/4242"
        .chars()
        .map(KeyCode::Char)
        .chain([KeyCode::Enter])
        .collect();
    let started = Instant::now();
    for &k in &search {
        press(&mut app, &mut store, k);
    }
    draw(&app);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    println!("subject search (/4242 Enter, all keys): {ms:.1} ms");
    rows.borrow_mut()
        .push(("subject search (/4242 Enter)".into(), ms, f64::NAN));
    timed(
        "view switch back to Dashboard",
        &mut app,
        &mut store,
        &[KeyCode::Char('1')],
    );

    let mut app = App::new(KeyMap::default(), Some("ann".into()));
    // Timed saves, not a person looking: no wait before a save.
    app.rate.min_view = std::time::Duration::ZERO;
    handle_now(&mut app, &mut store, Event::Tick);
    timed(
        "open the Rate view (ann, no queue)",
        &mut app,
        &mut store,
        &[KeyCode::Char('4')],
    );
    let saves = 50;
    let started = Instant::now();
    for _ in 0..saves {
        press(&mut app, &mut store, KeyCode::Char('a'));
        press(&mut app, &mut store, KeyCode::Enter);
    }
    draw(&app);
    let ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(saves);
    println!("rate and next ('a' Enter): {ms:.1} ms per image");
    rows.borrow_mut()
        .push(("rate and next".into(), ms, f64::NAN));
    assert_eq!(app.rate.saved.len(), saves as usize);

    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                // VmHWM (the peak) comes before VmRSS in the file.
                .filter(|l| l.starts_with("VmHWM:") || l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
                .reduce(|hwm, rss| format!("{rss} KiB now, peak {hwm}"))
        })
        .unwrap_or_default();
    println!("memory of this process (store open, app state): {rss} KiB");
    println!("| step | ms |\n|---|---|\n| first paint | {first:.1} |");
    println!("| rating counts refined (background) | {refined:.1} |");
    for (what, ms, cpu) in rows.into_inner() {
        println!("| {what} | {ms:.1} | CPU {cpu:.1} |");
    }
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
