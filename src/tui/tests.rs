//! Snapshot tests of every view (drawn on ratatui's TestBackend, no terminal) and
//! tests of key handling, driving the app state against a temporary store.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{App, Effect, Event, Request, Response};
use super::keys::{KeyMap, View};
use super::{handle_now, ui};
use crate::imaging::preview::Gray8;
use crate::store::Store;
use crate::store::iqm_outliers::shared_flags_table;

fn empty_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
    (dir, store)
}

/// Six FLAIR/T1w images of three subjects (one failed), previews, two raters and
/// fixed-time ratings by bob, a queue for ann, one run.
fn filled_store() -> (tempfile::TempDir, Store) {
    let (dir, store) = empty_store();
    let volume = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/qform_oblique.nii.gz")
        .display()
        .to_string();
    store
        .conn()
        .execute_batch(&format!(
            "INSERT INTO images (path, root, rel_path, status, error, subject, session, suffix,
                                 file_size, mtime_ns, dim_x, dim_y, dim_z, voxel_x, voxel_y,
                                 voxel_z, datatype, orientation, manufacturer, field_strength)
             SELECT CASE WHEN i = 1 THEN '{volume}'
                         ELSE '/w/sub-0' || (i % 3 + 1) || '/img' || i || '.nii.gz' END,
                    '/w', 'img' || i, CASE WHEN i = 6 THEN 'failed' ELSE 'ok' END,
                    CASE WHEN i = 6 THEN 'truncated: 10 of 20 bytes' END,
                    '0' || (i % 3 + 1), '01', CASE WHEN i % 2 = 0 THEN 'T1w' ELSE 'FLAIR' END,
                    100, 0, 176, 240, 256, 1.0, 1.0, 1.2, 'int16', 'RAS', 'Siemens', 3.0
             FROM range(1, 7) t(i);
             INSERT INTO raters (name) VALUES ('ann'), ('bob');
             INSERT INTO ratings (image_id, rater, usable, gado, motion, contrast, noise, code,
                                  protocol_version, source, rated_at, saved_at)
             VALUES (1, 'bob', true, false, 1, 0, 0, 'a', '1', 'test',
                     '2026-01-02 10:00:00+00', '2026-01-02 10:00:00+00'),
                    (2, 'bob', false, false, 0, 0, 0, 'r', '1', 'test',
                     '2026-01-02 10:01:00+00', '2026-01-02 10:01:00+00');
             INSERT INTO queues (name, overlap, seed) VALUES ('flair-1', 0.2, 7);
             INSERT INTO queue_items (queue_id, rater, position, image_id, shared)
             VALUES (1, 'ann', 0, 3, true), (1, 'ann', 1, 1, false),
                                            (1, 'ann', 2, 5, false);
             INSERT INTO runs (run_id, kind, task, status, started_at)
             VALUES ('r-2026-01-03', 'train', 'usable', 'completed', '2026-01-03 09:00:00+00');"
        ))
        .expect("fixture rows");
    let gradient = Gray8 {
        width: 16,
        height: 16,
        pixels: (0..256).map(|i| i as u8).collect(),
    };
    let png = gradient.to_png().expect("png");
    for image_id in 1..=5i64 {
        for plane in ["axial", "coronal", "sagittal"] {
            store
                .conn()
                .execute(
                    "INSERT INTO previews VALUES (?, ?, 16, 16, ?)",
                    duckdb::params![image_id, plane, png],
                )
                .expect("preview");
        }
    }
    // The fixture's rows went in behind the store layer: summarize them as migration
    // 011 does for an existing store, so the image list reads the summaries.
    crate::store::summaries::repair(store.conn()).expect("summaries");
    (dir, store)
}

fn app(store: &mut Store, rater: Option<&str>) -> App {
    let mut app = App::new(KeyMap::default(), rater.map(str::to_string));
    // Keys come faster here than anyone rates (`a_save_waits_until_...` tests the wait).
    app.rate.min_view = std::time::Duration::ZERO;
    handle_now(&mut app, store, Event::Tick);
    app
}

fn key(app: &mut App, store: &mut Store, code: KeyCode) {
    handle_now(
        app,
        store,
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE)),
    );
}

fn keys(app: &mut App, store: &mut Store, text: &str) {
    for c in text.chars() {
        key(app, store, KeyCode::Char(c));
    }
}

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal.draw(|frame| ui::draw(frame, app)).expect("draw");
    terminal.backend().to_string()
}

#[test]
fn dashboard_empty_small() {
    let (_dir, mut store) = empty_store();
    let app = app(&mut store, None);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn dashboard_filled() {
    let (_dir, mut store) = filled_store();
    let app = app(&mut store, None);
    insta::assert_snapshot!(screen(&app, 110, 30));
}

#[test]
fn dashboard_agreement_at_a_glance() {
    let (_dir, mut store) = filled_store();
    // ann agrees with bob on image 1 (usable) and not on image 2 (bob rejects it).
    store
        .conn()
        .execute_batch(
            "INSERT INTO ratings (image_id, rater, usable, gado, motion, contrast, noise, code,
                                  protocol_version, source, rated_at, saved_at)
             VALUES (1, 'ann', true, false, 1, 0, 0, 'a', '1', 'test',
                     '2026-01-02 11:00:00+00', '2026-01-02 11:00:00+00'),
                    (2, 'ann', true, false, 0, 0, 0, '', '1', 'test',
                     '2026-01-02 11:01:00+00', '2026-01-02 11:01:00+00');",
        )
        .expect("ratings");
    let app = app(&mut store, None);
    let glance = match &app.dashboard {
        Some(Ok(summary)) => summary
            .agreement
            .clone()
            .expect("agreement outside blind mode"),
        other => panic!("dashboard not loaded: {other:?}"),
    };
    assert_eq!(
        glance
            .iter()
            .map(|g| (g.task.as_str(), g.images))
            .collect::<Vec<_>>(),
        vec![("usable", 2), ("quality", 1)]
    );
    assert_eq!(glance[0].percent_agreement, Some(0.5));
    insta::assert_snapshot!(screen(&app, 110, 30));
}

#[test]
fn dashboard_hides_agreement_in_blind_mode() {
    let (_dir, mut store) = filled_store();
    let mut app = App::new(KeyMap::default(), Some("ann".into()));
    let mut asked = Vec::new();
    super::handle(&mut app, &mut store, Event::Tick, &mut |r| asked.push(r));
    assert_eq!(
        asked,
        vec![Request::Dashboard {
            agreement: false,
            ratings: false
        }]
    );
    let response = super::serve(&store, asked.remove(0));
    handle_now(&mut app, &mut store, Event::Loaded(response));
    let shown = screen(&app, 110, 30);
    assert!(shown.contains("hidden in blind rating mode"), "{shown}");
    assert!(matches!(&app.dashboard, Some(Ok(s)) if s.agreement.is_none()));
}

#[test]
fn images_empty_small() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "2");
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn images_with_detail_and_ratings() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "2j");
    assert_eq!(app.selected_image(), Some(2));
    insta::assert_snapshot!(screen(&app, 110, 30));
}

#[test]
fn images_small_terminal() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "2jj");
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn images_blind_hides_ratings() {
    let (_dir, mut store) = filled_store();
    // bob's ratings are in the per-image summaries the list reads.
    assert!(store.summaries_fresh());
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "2");
    let text = screen(&app, 110, 30);
    assert!(text.contains("ratings hidden (blind mode)"), "{text}");
    assert!(!text.contains("bob:"), "{text}");
    insta::assert_snapshot!(text);
    // Neither the rated nor the model filter runs, and no rater count or predicted
    // label reaches the state.
    keys(&mut app, &mut store, "xm");
    assert_eq!(
        app.images.filter,
        crate::store::dashboard::ImageFilter::default()
    );
    let page = app.images.page.as_ref().expect("page");
    assert_eq!(page.total, 6);
    assert!(
        page.rows
            .iter()
            .all(|r| r.rated_by == 0 && r.predicted.is_empty()),
        "{:?}",
        page.rows
    );
}

#[test]
fn images_filters_and_search() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "2t"); // status ok
    assert_eq!(app.images.page.as_ref().map(|p| p.total), Some(5));
    keys(&mut app, &mut store, "s"); // first sequence: FLAIR
    assert_eq!(app.images.filter.sequence.as_deref(), Some("FLAIR"));
    assert_eq!(app.images.page.as_ref().map(|p| p.total), Some(3));
    keys(&mut app, &mut store, "x"); // unrated
    assert_eq!(app.images.page.as_ref().map(|p| p.total), Some(2));
    keys(&mut app, &mut store, "c/02");
    key(&mut app, &mut store, KeyCode::Enter);
    assert_eq!(app.images.filter.subject.as_deref(), Some("02"));
    assert_eq!(app.images.page.as_ref().map(|p| p.total), Some(2));
    keys(&mut app, &mut store, "/zz");
    key(&mut app, &mut store, KeyCode::Enter);
    insta::assert_snapshot!(screen(&app, 80, 24));
    keys(&mut app, &mut store, "/");
    key(&mut app, &mut store, KeyCode::Esc);
    assert_eq!(app.images.filter.subject, None);
}

#[test]
fn viewer_scrolls_slices_and_window() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "3");
    let volume = app.viewer.volume.clone().expect("volume loaded");
    let axial = volume.ras_dims[2];
    assert_eq!(app.viewer.slice[2], axial / 2);
    key(&mut app, &mut store, KeyCode::Up);
    assert_eq!(app.viewer.slice[2], axial / 2 + 1);
    key(&mut app, &mut store, KeyCode::PageDown);
    key(&mut app, &mut store, KeyCode::PageDown);
    assert_eq!(app.viewer.slice[2], 0);
    let window = app.viewer.window;
    keys(&mut app, &mut store, "[=");
    assert_ne!(app.viewer.window, window);
    keys(&mut app, &mut store, "0v");
    assert_eq!(app.viewer.window, window);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn viewer_without_images() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "3");
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn rate_needs_a_rater() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "4");
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn rate_queue_pending_code_and_refusal() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "4");
    assert!(app.rate.from_queue);
    assert_eq!(app.rate.work, Some(vec![3, 1, 5]));
    // The next image's previews are fetched ahead.
    assert!(app.details.contains_key(&1));
    keys(&mut app, &mut store, "kaza");
    assert_eq!(app.rate.code, "kaza");
    keys(&mut app, &mut store, "a");
    assert_eq!(app.rate.code, "kaza");
    assert!(
        app.rate
            .error
            .as_deref()
            .is_some_and(|e| e.contains("at most twice"))
    );
    insta::assert_snapshot!(screen(&app, 110, 30));
}

#[test]
fn rate_small_terminal_and_help() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "4r");
    insta::assert_snapshot!("rate_small", screen(&app, 80, 24));
    keys(&mut app, &mut store, "?");
    insta::assert_snapshot!("rate_help", screen(&app, 80, 24));
    keys(&mut app, &mut store, "x");
    assert!(!app.help);
    assert_eq!(
        app.rate.code, "r",
        "the key that closes help does nothing else"
    );
}

#[test]
fn rate_saves_undoes_and_moves() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "4ra");
    assert_eq!(app.rate.code, "r");
    assert!(
        app.rate
            .error
            .as_deref()
            .is_some_and(|e| e.contains("stands alone"))
    );
    key(&mut app, &mut store, KeyCode::Enter);
    assert_eq!(app.rate.saved.last().map(|s| s.image_id), Some(3));
    assert_eq!(app.rate.current(), Some(1));
    keys(&mut app, &mut store, "dd");
    keys(&mut app, &mut store, "l");
    key(&mut app, &mut store, KeyCode::Backspace);
    key(&mut app, &mut store, KeyCode::Enter);
    let stored: Vec<(i64, bool, i64, String, bool, String, bool)> = store
        .conn()
        .prepare(
            "SELECT image_id, usable, noise, code, review_later, source, time_ms IS NOT NULL
             FROM ratings_latest WHERE rater = 'ann' ORDER BY rating_id",
        )
        .expect("prepare")
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        stored,
        vec![
            (3, false, 0, "r".into(), false, "tui".into(), true),
            (1, true, 1, "d".into(), true, "tui".into(), true),
        ]
    );
    assert_eq!(app.rate.current(), Some(5));
    key(&mut app, &mut store, KeyCode::Char('u'));
    assert_eq!(app.rate.current(), Some(1), "undo brings the image back");
    let in_force: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM ratings_latest WHERE rater = 'ann'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(in_force, 1);
    keys(&mut app, &mut store, "n");
    assert_eq!(app.rate.current(), Some(5));
    keys(&mut app, &mut store, "p");
    assert_eq!(app.rate.current(), Some(1));
}

#[test]
fn undo_withdraws_this_sessions_saves_only() {
    // Holding `u` in a new session withdrew bob's earlier ratings one after another
    // (the fixture's, or a file's he never saw in the dashboard), and a re-import of
    // the file could not bring them back.
    let (_dir, mut store) = filled_store();
    let count = |store: &Store| -> i64 {
        store
            .conn()
            .query_row(
                "SELECT count(*) FROM ratings_latest WHERE rater = 'bob'",
                [],
                |r| r.get(0),
            )
            .expect("count")
    };
    assert_eq!(count(&store), 2);
    let mut app = app(&mut store, Some("bob"));
    keys(&mut app, &mut store, "4");
    keys(&mut app, &mut store, "uuu");
    assert_eq!(
        count(&store),
        2,
        "no rating of an earlier session withdrawn"
    );
    assert!(
        app.message.contains("no rating saved in this session"),
        "{}",
        app.message
    );
    let first = app.rate.current().expect("an image to rate");
    keys(&mut app, &mut store, "d");
    key(&mut app, &mut store, KeyCode::Enter);
    assert_eq!(count(&store), 3);
    keys(&mut app, &mut store, "uuu");
    assert_eq!(
        count(&store),
        2,
        "the session's one save withdrawn, nothing more"
    );
    assert_eq!(app.rate.current(), Some(first));
    assert!(app.rate.saved.is_empty());
}

#[test]
fn rate_without_queue_takes_unrated_ok_images_and_ends() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, Some("bob"));
    keys(&mut app, &mut store, "4");
    assert!(!app.rate.from_queue);
    assert_eq!(app.rate.work, Some(vec![3, 4, 5]));
    for _ in 0..3 {
        key(&mut app, &mut store, KeyCode::Enter);
    }
    assert_eq!(app.rate.work, Some(vec![]));
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn blind_mode_never_asks_for_ratings() {
    let (_dir, mut store) = filled_store();
    let mut app = App::new(KeyMap::default(), Some("ann".into()));
    app.view = View::Rate;
    let mut asked = Vec::new();
    super::handle(&mut app, &mut store, Event::Tick, &mut |r| asked.push(r));
    let response = super::serve(&store, asked.remove(0));
    super::handle(&mut app, &mut store, Event::Loaded(response), &mut |r| {
        asked.push(r)
    });
    assert!(!asked.is_empty());
    for request in asked {
        if let Request::Detail { with_ratings, .. } = request {
            assert!(!with_ratings);
        }
    }
}

#[test]
fn ctrl_c_quits_from_any_view_and_search() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "2/");
    let effects = app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    assert!(app.quit);
    assert_eq!(effects, vec![Effect::Quit]);
}

#[test]
fn quitting_with_a_transaction_open_in_the_sql_view_asks_first() {
    let (_dir, mut store) = empty_store();
    let open = |store: &Store, sql: &str| match crate::tui::sql::serve(
        store,
        crate::tui::sql::SqlRequest::Run {
            id: 1,
            sql: sql.into(),
            write: true,
        },
    ) {
        crate::tui::sql::SqlResponse::Ran {
            transaction_open, ..
        } => transaction_open,
        other => panic!("{other:?}"),
    };
    assert!(open(
        &store,
        "begin; insert into raters (name) values ('zed')"
    ));
    assert!(open(&store, "select 1"), "still open until it ends");
    assert!(!open(&store, "commit"));
    assert!(!open(&store, "insert into raters (name) values ('amy')"));
    let mut app = app(&mut store, None);
    app.sql.transaction_open = true;
    let q = || Event::Key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE));
    let effects = app.update(q());
    assert!(!app.quit && effects.is_empty(), "{effects:?}");
    assert!(
        app.message.contains("COMMIT or ROLLBACK"),
        "{}",
        app.message
    );
    let effects = app.update(q());
    assert!(app.quit);
    assert_eq!(effects, vec![Effect::Quit]);
}

fn ctrl(app: &mut App, store: &mut Store, c: char) {
    handle_now(
        app,
        store,
        Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)),
    );
}

/// Types multi-line text into the focused editor (newlines as Enter).
fn type_sql(app: &mut App, store: &mut Store, text: &str) {
    for c in text.chars() {
        let code = if c == '\n' {
            KeyCode::Enter
        } else {
            KeyCode::Char(c)
        };
        key(app, store, code);
    }
}

/// The SQL view with `sql` typed and run.
fn sql_app(store: &mut Store, sql: &str) -> App {
    let mut app = app(store, None);
    keys(&mut app, store, "5");
    assert_eq!(app.view, View::Sql);
    type_sql(&mut app, store, sql);
    ctrl(&mut app, store, 'r');
    assert!(app.sql.running.is_none(), "served at once in tests");
    // Timings vary; snapshots show a fixed one.
    if let Some(Ok(done)) = app.sql.outcome.as_mut() {
        done.elapsed = std::time::Duration::from_millis(12);
    }
    app
}

fn sql_error(app: &App) -> String {
    match &app.sql.outcome {
        Some(Err(err)) => err.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn sql_rows(app: &App) -> Vec<Vec<String>> {
    match &app.sql.outcome {
        Some(Ok(done)) => done
            .result
            .rows
            .iter()
            .map(|r| r.iter().map(crate::query::Cell::display).collect())
            .collect(),
        other => panic!("expected rows, got {other:?}"),
    }
}

#[test]
fn sql_empty_small() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "5");
    assert_eq!(app.view, View::Sql);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn sql_result_fits_columns_and_shows_nulls() {
    let (_dir, mut store) = filled_store();
    let app = sql_app(
        &mut store,
        "select image_id, subject, suffix, status, error,\n       dim_x * 1.5 as half_wider\nfrom images order by image_id",
    );
    assert_eq!(sql_rows(&app).len(), 6);
    assert_eq!(app.message, "6 rows");
    insta::assert_snapshot!("sql_result", screen(&app, 110, 30));
    insta::assert_snapshot!("sql_result_small", screen(&app, 80, 24));
}

#[test]
fn sql_result_scrolls_rows_and_columns() {
    let (_dir, mut store) = filled_store();
    let mut app = sql_app(
        &mut store,
        "select i, repeat('a', 30) as a, repeat('b', 30) as b, repeat('c', 30) as c from range(100) t(i)",
    );
    key(&mut app, &mut store, KeyCode::Esc);
    key(&mut app, &mut store, KeyCode::Down);
    key(&mut app, &mut store, KeyCode::PageDown);
    assert_eq!(app.sql.row, 21);
    key(&mut app, &mut store, KeyCode::End);
    assert_eq!(app.sql.row, 99);
    key(&mut app, &mut store, KeyCode::Right);
    key(&mut app, &mut store, KeyCode::Right);
    assert_eq!(app.sql.column, 2);
    insta::assert_snapshot!(screen(&app, 80, 24));
    key(&mut app, &mut store, KeyCode::Enter);
    key(&mut app, &mut store, KeyCode::Char('x'));
    assert!(
        app.sql.editor.text().ends_with("t(i)x"),
        "Enter returns to the editor"
    );
}

#[test]
fn sql_error_in_place_keeps_the_text() {
    let (_dir, mut store) = filled_store();
    let app = sql_app(&mut store, "select nope from images");
    assert!(sql_error(&app).contains("nope"), "{}", sql_error(&app));
    assert_eq!(app.sql.editor.text(), "select nope from images");
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn sql_a_type_the_reader_cannot_read_is_an_error_not_a_panic() {
    // TIME_NS panicked inside the duckdb crate, on the SQL view's worker: the terminal
    // left raw mode and the view kept saying "running".
    let (_dir, mut store) = filled_store();
    let app = sql_app(&mut store, "select '12:00'::TIME_NS as t");
    let error = sql_error(&app);
    assert!(
        error.contains("column \"t\"") && error.contains("::VARCHAR"),
        "{error}"
    );
    let app = sql_app(&mut store, "select ['12:00'::TIME_NS] as t");
    assert!(
        sql_error(&app).contains("column \"t\""),
        "{}",
        sql_error(&app)
    );
}

#[test]
fn sql_typing_never_triggers_global_keys() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "5");
    type_sql(&mut app, &mut store, "q12345?/c");
    key(&mut app, &mut store, KeyCode::Tab);
    type_sql(&mut app, &mut store, "x");
    key(&mut app, &mut store, KeyCode::BackTab);
    assert_eq!(app.view, View::Sql);
    assert!(!app.quit && !app.help);
    assert_eq!(app.sql.editor.text(), "q12345?/c    x");
    // Esc leaves the editor: then the global keys work again.
    key(&mut app, &mut store, KeyCode::Esc);
    keys(&mut app, &mut store, "2");
    assert_eq!(app.view, View::Images);
    keys(&mut app, &mut store, "5");
    key(&mut app, &mut store, KeyCode::F(1));
    assert!(app.help);
    insta::assert_snapshot!("sql_help", screen(&app, 80, 24));
}

#[test]
fn sql_is_read_only_until_writing_is_turned_on() {
    let (_dir, mut store) = filled_store();
    let mut app = sql_app(&mut store, "insert into raters (name) values ('zed')");
    let err = sql_error(&app);
    assert!(err.contains("read-only"), "{err}");
    let text = screen(&app, 80, 24);
    assert!(text.contains("Ctrl-t turns writing on"), "{text}");
    // Transaction control cannot end the read-only transaction early.
    app.sql.editor =
        crate::tui::sql::Editor::from_text("commit; insert into raters (name) values ('zed')");
    ctrl(&mut app, &mut store, 'r');
    let err = sql_error(&app);
    assert!(err.contains("statement 1 of 2 is TRANSACTION"), "{err}");
    // Dollar quoting once fooled a hand-written splitter into running COMMIT and a
    // CREATE; DuckDB's parser sees four statements and the check refuses them all.
    app.sql.editor = crate::tui::sql::Editor::from_text(
        "select $$'$$; commit; create table pwned as select 1 as x; select '$$'",
    );
    ctrl(&mut app, &mut store, 'r');
    let err = sql_error(&app);
    assert!(err.contains("statement 2 of 4 is TRANSACTION"), "{err}");
    app.sql.editor = crate::tui::sql::Editor::from_text("delete from ratings");
    ctrl(&mut app, &mut store, 'r');
    assert!(sql_error(&app).contains("DELETE"), "{}", sql_error(&app));
    let tables: i64 = store
        .conn()
        .query_row(
            "select count(*) from duckdb_tables() where table_name = 'pwned'",
            [],
            |r| r.get(0),
        )
        .expect("tables");
    assert_eq!(tables, 0);
    let raters = |store: &Store| -> i64 {
        store
            .conn()
            .query_row("select count(*) from raters", [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(raters(&store), 2);
    ctrl(&mut app, &mut store, 't');
    assert!(app.sql.write);
    assert!(screen(&app, 80, 24).contains("SQL WRITING ON"));
    app.sql.editor = crate::tui::sql::Editor::from_text(
        "insert into raters (name) values ('zed');\nselect name from raters order by name",
    );
    ctrl(&mut app, &mut store, 'r');
    assert_eq!(sql_rows(&app), [["ann"], ["bob"], ["zed"]]);
    assert_eq!(raters(&store), 3);
    assert!(app.dashboard.is_none(), "views reload after a write");
    ctrl(&mut app, &mut store, 't');
    assert!(!app.sql.write);
}

#[test]
fn sql_reaches_no_file_and_settings_stay_locked() {
    let (_dir, mut store) = filled_store();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    crate::query::close_file_access(&store).expect("close file access");
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "5");
    ctrl(&mut app, &mut store, 't');
    let outside = elsewhere.path().join("x.csv");
    type_sql(
        &mut app,
        &mut store,
        &format!("copy (select 1) to '{}'", outside.display()),
    );
    ctrl(&mut app, &mut store, 'r');
    let err = sql_error(&app);
    assert!(
        err.contains("is COPY, which cdwqc never runs") || err.contains("Permission"),
        "{err}"
    );
    assert!(!outside.exists());
    let store_path = store.path().canonicalize().expect("store path");
    for attack in [
        format!(
            "copy (select 1) to '{}' (use_tmp_file false)",
            store_path.display()
        ),
        "set enable_external_access = true".to_string(),
        "reset lock_configuration".to_string(),
        "select * from enable_logging(storage = 'file', storage_path = '/tmp')".to_string(),
    ] {
        app.sql.editor = crate::tui::sql::Editor::from_text(&attack);
        ctrl(&mut app, &mut store, 'r');
        let err = sql_error(&app);
        assert!(
            err.contains("refused") || err.contains("never runs"),
            "{attack}: {err}"
        );
    }
    let locked = store
        .conn()
        .execute_batch("SET enable_external_access = true")
        .expect_err("locked");
    assert!(locked.to_string().contains("locked"), "{locked}");
}

/// This process's peak resident memory (Linux), in KiB.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn sql_huge_result_is_capped_while_streaming() {
    let (_dir, store) = empty_store();
    let started = std::time::Instant::now();
    // A billion rows: fetching them all would take minutes and gigabytes.
    let done = crate::tui::sql::run_query(
        &store,
        "select i, i * 2 as j from range(1000000000) t(i)",
        false,
        crate::tui::sql::ROW_LIMIT,
        crate::tui::sql::BYTE_LIMIT,
    )
    .expect("query");
    assert_eq!(done.result.rows.len(), crate::tui::sql::ROW_LIMIT);
    assert!(done.truncated);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let peak = peak_memory_kib();
    assert!(peak.is_none_or(|kib| kib < 1 << 20), "peak {peak:?} KiB");
    let capped = started.elapsed();
    // Big values stop the fetch by size too: 1 MB in 10,000-byte values.
    let done = crate::tui::sql::run_query(
        &store,
        "select repeat('x', 10000) as big from range(1000000)",
        false,
        crate::tui::sql::ROW_LIMIT,
        1 << 20,
    )
    .expect("query");
    assert!(done.truncated);
    assert_eq!(
        done.result.rows.len(),
        105,
        "the row that crosses 1 MiB is the last"
    );
    eprintln!(
        "a billion rows capped in {capped:?}, big values in {:?}",
        done.elapsed
    );
    // A small result is whole.
    let done = crate::tui::sql::run_query(&store, "select 1 as x", false, 10, 1 << 20).expect("q");
    assert!(!done.truncated);
    assert_eq!(done.result.rows.len(), 1);
}

#[test]
fn sql_running_query_can_be_interrupted() {
    let (_dir, store) = empty_store();
    let console = store.reader().expect("connection");
    let interrupt = console.conn().interrupt_handle();
    // Interrupting an idle connection does not spoil its next query.
    interrupt.interrupt();
    let worker = std::thread::spawn(move || {
        let slow = crate::tui::sql::run_query(
            &console,
            "select count(*) from range(1000000000000) t(i) where i % 7 = 3",
            false,
            10,
            1 << 20,
        );
        let after = crate::tui::sql::run_query(&console, "select 42", false, 10, 1 << 20);
        (slow, after)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    interrupt.interrupt();
    let (slow, after) = worker.join().expect("worker");
    let err = slow.expect_err("interrupted");
    assert!(err.contains("nterrupt"), "{err}");
    assert_eq!(after.expect("next query").result.rows.len(), 1);
}

#[test]
fn sql_history_is_kept_across_runs() {
    let (dir, mut store) = filled_store();
    let file = dir.path().join("state/sql_history.jsonl");
    let mut app = app(&mut store, None);
    app.sql.history_file = Some(file.clone());
    keys(&mut app, &mut store, "5");
    type_sql(&mut app, &mut store, "select 1 as one");
    ctrl(&mut app, &mut store, 'r');
    app.sql.editor = crate::tui::sql::Editor::from_text("select 2 as two,\n  3 as three");
    ctrl(&mut app, &mut store, 'r');
    let history = crate::tui::sql::load_history(&file);
    assert_eq!(
        history,
        ["select 1 as one", "select 2 as two,\n  3 as three"]
    );
    // A new session starts with the file's history.
    let mut next = App::new(KeyMap::default(), None);
    next.sql.history = history;
    next.view = View::Sql;
    type_sql(&mut next, &mut store, "draft");
    ctrl(&mut next, &mut store, 'p');
    assert_eq!(next.sql.editor.text(), "select 2 as two,\n  3 as three");
    ctrl(&mut next, &mut store, 'p');
    assert_eq!(next.sql.editor.text(), "select 1 as one");
    ctrl(&mut next, &mut store, 'n');
    ctrl(&mut next, &mut store, 'n');
    assert_eq!(next.sql.editor.text(), "draft");
}

#[test]
fn sql_saved_query_loads_and_runs() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "5");
    ctrl(&mut app, &mut store, 'o');
    key(&mut app, &mut store, KeyCode::Down);
    insta::assert_snapshot!("sql_saved_queries", screen(&app, 80, 24));
    key(&mut app, &mut store, KeyCode::Enter);
    assert_eq!(app.sql.picker, None);
    let name = app.sql.saved[1].name.clone();
    assert_eq!(app.sql.editor.text(), app.sql.saved[1].sql);
    assert!(app.message.contains(&name));
    ctrl(&mut app, &mut store, 'r');
    assert!(
        matches!(app.sql.outcome, Some(Ok(_))),
        "{:?}",
        app.sql.outcome
    );
}

#[test]
fn sql_exports_csv_and_parquet() {
    let (dir, mut store) = filled_store();
    let mut app = sql_app(&mut store, "select image_id, error from images order by 1");
    app.sql.export_dir = dir.path().to_path_buf();
    ctrl(&mut app, &mut store, 's');
    let default = dir.path().join("result.csv").display().to_string();
    assert_eq!(app.sql.export_input.as_deref(), Some(default.as_str()));
    key(&mut app, &mut store, KeyCode::Enter);
    let csv = std::fs::read_to_string(dir.path().join("result.csv")).expect("csv");
    assert!(csv.starts_with("image_id,error\n1,\n"), "{csv}");
    assert_eq!(csv.lines().count(), 7);
    assert!(app.message.starts_with("wrote 6 rows"), "{}", app.message);
    // The same name again is refused in place; a new one is typed.
    ctrl(&mut app, &mut store, 's');
    key(&mut app, &mut store, KeyCode::Enter);
    assert!(
        app.sql
            .export_error
            .as_deref()
            .is_some_and(|e| e.contains("exists"))
    );
    for _ in 0..default.len() {
        key(&mut app, &mut store, KeyCode::Backspace);
    }
    keys(&mut app, &mut store, "r.txt");
    key(&mut app, &mut store, KeyCode::Enter);
    assert!(
        app.sql
            .export_error
            .as_deref()
            .is_some_and(|e| e.contains(".parquet"))
    );
    insta::assert_snapshot!("sql_export_prompt", screen(&app, 80, 24));
    for _ in 0.."txt".len() {
        key(&mut app, &mut store, KeyCode::Backspace);
    }
    keys(&mut app, &mut store, "parquet");
    key(&mut app, &mut store, KeyCode::Enter);
    assert_eq!(app.sql.export_input, None);
    let n: i64 = store
        .conn()
        .query_row(
            &format!(
                "select count(*) from '{}'",
                dir.path().join("r.parquet").display()
            ),
            [],
            |r| r.get(0),
        )
        .expect("parquet");
    assert_eq!(n, 6);
}

/// The filled store plus ann's ratings, so that there is a rater pair: images 2 and 3
/// rejected.
fn filled_store_rated_by_ann() -> (tempfile::TempDir, Store) {
    let (dir, store) = filled_store();
    store
        .conn()
        .execute_batch(
            "INSERT INTO ratings (image_id, rater, usable, gado, motion, contrast, noise, code,
                                  protocol_version, source, rated_at, saved_at)
             SELECT i, 'ann', i NOT IN (2, 3), false, 0, 0, 0, CASE WHEN i IN (2, 3) THEN 'r' ELSE '' END,
                    '1', 'test', '2026-01-02 11:00:00+00', '2026-01-02 11:00:00+00'
             FROM range(1, 6) t(i);",
        )
        .expect("ann's ratings");
    (dir, store)
}

/// [`filled_store_rated_by_ann`] and two runs with held-out predictions: ssda and the
/// target-only baseline.
fn store_with_runs() -> (tempfile::TempDir, Store) {
    let (dir, store) = filled_store_rated_by_ann();
    store
        .conn()
        .execute_batch(
            "INSERT INTO runs (run_id, kind, task, method, status, split_id, started_at)
             VALUES ('u-ssda', 'train', 'usable', 'ssda', 'completed', 'u-ssda', '2026-01-04 09:00:00+00'),
                    ('u-target', 'train', 'usable', 'target-only', 'completed', 'u-target', '2026-01-04 10:00:00+00');
             INSERT INTO splits SELECT s.run, i, '0' || (i % 3 + 1), 'target', 'test', NULL
             FROM range(1, 6) t(i), (VALUES ('u-ssda'), ('u-target')) s(run);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities, predicted_at)
             SELECT 'u-ssda', i, 'usable', CASE WHEN i = 3 THEN 'reject' ELSE 'usable' END,
                    CASE WHEN i = 3 THEN [0.2, 0.8] ELSE [0.9, 0.1] END, '2026-01-05 09:00:00+00'
             FROM range(1, 6) t(i);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities, predicted_at)
             SELECT 'u-target', i, 'usable', 'usable', [0.7, 0.3], '2026-01-04 10:00:00+00'
             FROM range(1, 6) t(i);",
        )
        .expect("runs and predictions");
    crate::store::summaries::repair(store.conn()).expect("summaries");
    (dir, store)
}

/// Two seeds of ssda and of target-only, each seed's pair on its own held-out images
/// (seed 1: images 1-4, seed 2: images 2-5), and one ssda seed without its baseline.
fn store_with_two_seeds() -> (tempfile::TempDir, Store) {
    let (dir, store) = filled_store_rated_by_ann();
    store
        .conn()
        .execute_batch(
            "INSERT INTO runs (run_id, kind, task, method, status, split_id, started_at)
             SELECT run, 'train', 'usable', method, 'completed', run, '2026-01-04 09:00:00+00'
             FROM (VALUES ('u-ssda-seed1', 'ssda'), ('u-ssda-seed2', 'ssda'), ('u-ssda-seed3', 'ssda'),
                          ('u-target-seed1', 'target-only'), ('u-target-seed2', 'target-only')) r(run, method);
             INSERT INTO splits SELECT run, i, '0' || (i % 3 + 1), 'target', 'test', NULL
             FROM range(1, 6) t(i),
                  (VALUES ('u-ssda-seed1', 1, 4), ('u-target-seed1', 1, 4), ('u-ssda-seed2', 2, 5),
                          ('u-target-seed2', 2, 5), ('u-ssda-seed3', 1, 5)) s(run, lo, hi)
             WHERE i BETWEEN lo AND hi;
             -- ssda is right everywhere; target-only seed 1 calls everything usable,
             -- seed 2 calls everything reject.
             INSERT INTO predictions (run_id, image_id, task, label, probabilities, predicted_at)
             SELECT run, i, 'usable', CASE WHEN i IN (2, 3) THEN 'reject' ELSE 'usable' END,
                    CASE WHEN i IN (2, 3) THEN [0.2, 0.8] ELSE [0.9, 0.1] END, '2026-01-05 09:00:00+00'
             FROM range(1, 6) t(i), (VALUES ('u-ssda-seed1'), ('u-ssda-seed2'), ('u-ssda-seed3')) r(run);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities, predicted_at)
             SELECT 'u-target-seed1', i, 'usable', 'usable', [0.7, 0.3], '2026-01-04 10:00:00+00'
             FROM range(1, 6) t(i);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities, predicted_at)
             SELECT 'u-target-seed2', i, 'usable', 'reject', [0.3, 0.7], '2026-01-04 10:00:00+00'
             FROM range(1, 6) t(i);",
        )
        .expect("runs and predictions");
    crate::store::summaries::repair(store.conn()).expect("summaries");
    (dir, store)
}

#[test]
fn reports_pair_each_seed_with_its_own_baseline() {
    let (_dir, mut store) = store_with_two_seeds();
    let mut app = app(&mut store, None);
    open_reports(&mut app, &mut store);
    let data = app.reports.data.clone().expect("loaded").expect("built");
    let comparison = data.comparison.as_ref().expect("runs with predictions");
    let pairs: Vec<(&str, &str)> = comparison
        .versus_baseline
        .iter()
        .map(|p| (p.run_id.as_str(), p.baseline_run_id.as_str()))
        .collect();
    // Each seed against the baseline scored on its images; the seed without one against
    // both; never one baseline against another seed's.
    assert_eq!(
        pairs,
        [
            ("u-ssda-seed1", "u-target-seed1"),
            ("u-ssda-seed2", "u-target-seed2"),
            ("u-ssda-seed3", "u-target-seed1"),
            ("u-ssda-seed3", "u-target-seed2"),
        ]
    );
    let text = screen(&app, 170, 36);
    let row = |run: &str| {
        text.lines()
            .find(|l| l.contains(&format!("│ {run} ")) || l.contains(&format!("│›{run} ")))
            .unwrap_or_else(|| panic!("{run}'s row in\n{text}"))
            .to_string()
    };
    // Seed 1's baseline misses both rejects of its four images (BA 0.5), seed 2's calls
    // the two usable images of its four reject (BA 0.5): +0.500 each, on their own pairs.
    assert!(
        row("u-ssda-seed1").contains("+0.500 [0.000, 1.000]"),
        "{text}"
    );
    assert!(row("u-ssda-seed2").contains("+0.500"), "{text}");
    assert!(row("u-ssda-seed3").contains("2 baselines"), "{text}");
    assert!(!row("u-target-seed2").contains("+"), "{text}");
    // The chart groups a repeated method's bars, each under its id's end.
    assert!(text.contains("seed1 seed2 seed3"), "{text}");
    assert!(text.contains("target-only"), "{text}");
    insta::assert_snapshot!(text);
}

fn open_reports(app: &mut App, store: &mut Store) {
    keys(app, store, "6");
    assert_eq!(app.view, View::Reports);
}

#[test]
fn reports_empty_small() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    open_reports(&mut app, &mut store);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn reports_agreement_and_models() {
    let (_dir, mut store) = store_with_runs();
    let mut app = app(&mut store, None);
    open_reports(&mut app, &mut store);
    let data = app.reports.data.clone().expect("loaded").expect("built");
    let comparison = data.comparison.as_ref().expect("two runs with predictions");
    assert_eq!(comparison.runs.len(), 2);
    assert_eq!(comparison.runs[0].method.as_deref(), Some("ssda"));
    insta::assert_snapshot!(screen(&app, 120, 30));
    keys(&mut app, &mut store, "t");
    insta::assert_snapshot!("reports_quality_small", screen(&app, 80, 24));
}

#[test]
fn reports_are_hidden_in_blind_mode() {
    let (_dir, mut store) = store_with_runs();
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "6");
    assert_ne!(app.view, View::Reports, "blind mode has no Reports view");
    assert!(
        app.message.contains("not available in blind"),
        "{}",
        app.message
    );
    assert!(app.reports.data.is_none(), "nothing computed while blind");
    // Even placed there by hand, the view is left at the first key.
    app.view = View::Reports;
    keys(&mut app, &mut store, "e");
    assert_eq!(app.view, View::Rate);
    assert!(app.reports.data.is_none());
}

#[test]
fn reports_export_writes_html_beside_the_store() {
    let (dir, mut store) = store_with_runs();
    let mut app = app(&mut store, None);
    open_reports(&mut app, &mut store);
    keys(&mut app, &mut store, "e");
    assert!(app.message.starts_with("wrote "), "{}", app.message);
    for name in ["agreement.html", "comparison.html"] {
        let html = std::fs::read_to_string(dir.path().join("reports").join(name)).expect(name);
        assert!(html.contains("<svg"), "{name} has plots");
    }
}

#[test]
fn images_filter_by_model_and_show_predictions_unless_blind() {
    let (_dir, mut store) = store_with_runs();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "2");
    let total = |app: &App| app.images.page.as_ref().map_or(0, |p| p.total);
    assert_eq!(total(&app), 6);
    // The newest usable prediction per image is u-ssda's:
    // image 3 reject, the others usable; image 2 is usable to the model, reject to both raters.
    keys(&mut app, &mut store, "m");
    assert_eq!(app.images.filter.predicted.as_deref(), Some("usable"));
    assert_eq!(total(&app), 4);
    keys(&mut app, &mut store, "m");
    assert_eq!(total(&app), 1);
    keys(&mut app, &mut store, "m");
    assert_eq!(app.images.filter.disagreement, Some(true));
    assert_eq!(total(&app), 1);
    assert_eq!(app.images.selected_row().map(|r| r.image_id), Some(2));
    insta::assert_snapshot!(screen(&app, 120, 30));
    keys(&mut app, &mut store, "m");
    assert_eq!(total(&app), 6);

    let mut blind = App::new(KeyMap::default(), Some("ann".into()));
    handle_now(&mut blind, &mut store, Event::Tick);
    keys(&mut blind, &mut store, "2m");
    assert_eq!(blind.images.filter, Default::default());
    assert!(blind.message.contains("hidden"), "{}", blind.message);
    let text = screen(&blind, 120, 30);
    assert!(
        !text.contains("rated model") && !text.contains("u-ssda"),
        "{text}"
    );
}

#[test]
fn an_image_that_does_not_register_shows_its_reject_and_why_unless_blind() {
    let (_dir, mut store) = store_with_runs();
    store
        .save_predictions(
            "model:registered",
            &[crate::store::runs::PredictionRow {
                image_id: 3,
                task: "usable".into(),
                label: Some("reject".into()),
                probabilities: Some(vec![0.0, 1.0]),
                error: None,
                domain_target: None,
                reason: Some(
                    "/w/sub-01/anat/img3.nii.gz: registration failed: correlation ratio 0.12"
                        .into(),
                ),
            }],
        )
        .expect("a reject for want of a registration");
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "2jj");
    assert_eq!(app.selected_image(), Some(3));
    let text = screen(&app, 160, 30);
    assert!(
        text.contains("model model:registered usable: reject (not registered)")
            && text.contains("  registration failed: correlation ratio 0.12"),
        "{text}"
    );

    let mut blind = App::new(KeyMap::default(), Some("ann".into()));
    handle_now(&mut blind, &mut store, Event::Tick);
    keys(&mut blind, &mut store, "2jj");
    let text = screen(&blind, 160, 30);
    assert!(
        !text.contains("not registered") && !text.contains("model:registered"),
        "{text}"
    );
}

fn open_jobs(app: &mut App, store: &mut Store) {
    keys(app, store, "7");
    assert_eq!(app.view, View::Jobs);
}

#[test]
fn jobs_empty_small_and_the_form() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    open_jobs(&mut app, &mut store);
    insta::assert_snapshot!(screen(&app, 80, 24));
    keys(&mut app, &mut store, "n");
    // Every key goes to the form while it is open: '1' does not leave the view.
    keys(&mut app, &mut store, "1");
    assert_eq!(app.view, View::Jobs);
    key(&mut app, &mut store, KeyCode::Down);
    key(&mut app, &mut store, KeyCode::Right);
    insta::assert_snapshot!("jobs_form_small", screen(&app, 80, 24));
    // Predicting needs a trained run: the form says so and stays open.
    key(&mut app, &mut store, KeyCode::Up);
    key(&mut app, &mut store, KeyCode::Right);
    key(&mut app, &mut store, KeyCode::Enter);
    let form = app.jobs.form.as_ref().expect("still open");
    assert!(
        form.error
            .as_deref()
            .is_some_and(|e| e.contains("train one first")),
        "{form:?}"
    );
    key(&mut app, &mut store, KeyCode::Esc);
    assert!(app.jobs.form.is_none());
    assert!(app.jobs.jobs.is_empty());
}

#[test]
fn jobs_running_job_with_curves_and_log() {
    use crate::jobs::JobEvent;
    use crate::jobs::plan::TrainRequest;
    use crate::model::train::{EpochReport, Phase};
    use crate::tui::jobs::JobRequest;

    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    open_jobs(&mut app, &mut store);
    let id = app.jobs.add(&JobRequest::Train(TrainRequest {
        preset: Some("demo".into()),
        epochs: Some(8),
        run: Some("usable-ssda-demo-1".into()),
        ..TrainRequest::default()
    }));
    let mut events = vec![JobEvent::Started {
        first_epoch: 0,
        total_epochs: 8,
        device: "cpu".into(),
    }];
    for epoch in 1..=5 {
        let e = epoch as f64;
        events.push(JobEvent::Epoch {
            report: EpochReport {
                epoch,
                phase: Phase::Main,
                train_loss: 2.0 / e,
                source_loss: 1.0 / e,
                target_loss: 0.8 / e,
                domain_loss: 0.69,
                val_loss: 1.2 / e.sqrt(),
                val_balanced_accuracy: 0.5 + 0.08 * e,
                alpha: 0.1 * e,
                seconds: 12.5,
                improved: epoch != 4,
            },
        });
    }
    events.push(JobEvent::Batch {
        epoch: 6,
        batch: 10,
        batches: 40,
    });
    for event in &events {
        app.jobs.on_event(id, event);
    }
    keys(&mut app, &mut store, "1");
    let dashboard = screen(&app, 110, 30);
    assert!(
        dashboard.contains("1 job(s) running (7 Jobs)"),
        "{dashboard}"
    );
    keys(&mut app, &mut store, "7");
    let job = &app.jobs.jobs[0];
    assert_eq!(job.epochs.len(), 5);
    assert!((job.progress() - 5.25 / 8.0).abs() < 1e-12);
    insta::assert_snapshot!(screen(&app, 120, 32));
    insta::assert_snapshot!("jobs_running_small", screen(&app, 80, 24));
    // Stopping asks the worker to stop; quitting while it runs asks first.
    keys(&mut app, &mut store, "c");
    assert_eq!(app.jobs.jobs[0].status.label(), "stopping");
    keys(&mut app, &mut store, "q");
    assert!(
        !app.quit && app.message.contains("q again"),
        "{}",
        app.message
    );
    keys(&mut app, &mut store, "q");
    assert!(!app.quit, "waits for the job to end");
    app.jobs.on_event(
        id,
        &JobEvent::Failed {
            error: "stopped".into(),
        },
    );
    handle_now(&mut app, &mut store, Event::Tick);
    assert!(app.quit, "quits once the job has ended");
}

#[test]
fn jobs_log_keeps_its_newest_line_in_view_when_entries_wrap() {
    use crate::jobs::JobEvent;
    use crate::jobs::plan::TrainRequest;
    use crate::tui::jobs::JobRequest;

    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    open_jobs(&mut app, &mut store);
    let id = app.jobs.add(&JobRequest::Train(TrainRequest {
        preset: Some("demo".into()),
        run: Some("usable-ssda-demo-1".into()),
        ..TrainRequest::default()
    }));
    // Each entry wraps over two or three rows of the log at 80 columns.
    for n in 0..12 {
        app.jobs.on_event(
            id,
            &JobEvent::ItemFailed {
                id: format!("img{n}"),
                error: "a long reason that the log has to wrap over more than one row of \
                        the pane, as a plan's summary line does"
                    .into(),
            },
        );
    }
    app.jobs.on_event(
        id,
        &JobEvent::ItemFailed {
            id: "newest".into(),
            error: "the last entry".into(),
        },
    );
    keys(&mut app, &mut store, "7");
    for (width, height) in [(80, 24), (120, 32)] {
        let shown = screen(&app, width, height);
        assert!(shown.contains("image newest: the last entry"), "{shown}");
    }
}

#[test]
fn jobs_stored_run_shows_its_curves() {
    let (_dir, mut store) = filled_store();
    store
        .conn()
        .execute_batch(
            "UPDATE runs SET method = 'ssda', metrics = '{\"best_val_balanced_accuracy\": 0.75, \"test_balanced_accuracy\": 0.8}';
             INSERT INTO epochs (run_id, epoch, train_loss, val_loss, val_balanced_accuracy, seconds)
             SELECT 'r-2026-01-03', e, 1.5 / e, 0.9 - 0.05 * e, 0.5 + 0.05 * e, 3.0 FROM range(1, 7) t(e);",
        )
        .expect("epochs");
    let mut app = app(&mut store, None);
    open_jobs(&mut app, &mut store);
    let (run, epochs) = app.jobs.run_epochs.as_ref().expect("epochs asked for");
    assert_eq!(run, "r-2026-01-03");
    assert_eq!(epochs.as_ref().map(Vec::len), Ok(6));
    insta::assert_snapshot!(screen(&app, 110, 28));
}

#[test]
fn an_inference_run_says_it_has_no_epochs_instead_of_waiting_for_one() {
    let (_dir, mut store) = filled_store();
    store
        .conn()
        .execute_batch("UPDATE runs SET kind = 'infer' WHERE run_id = 'r-2026-01-03';")
        .expect("an inference run");
    let mut app = app(&mut store, None);
    open_jobs(&mut app, &mut store);
    let shown = screen(&app, 130, 28);
    assert!(
        shown.contains("predictions only, no training") && !shown.contains("no finished epoch"),
        "{shown}"
    );
}

/// "interrupted", the longest status, keeps a space before the run's name.
#[test]
fn an_interrupted_run_is_listed_apart_from_its_name() {
    let (_dir, mut store) = filled_store();
    store
        .conn()
        .execute_batch("UPDATE runs SET status = 'interrupted' WHERE run_id = 'r-2026-01-03';")
        .expect("an interrupted run");
    let mut app = app(&mut store, None);
    open_jobs(&mut app, &mut store);
    let shown = screen(&app, 110, 28);
    assert!(shown.contains("interrupted r-2026-01-03"), "{shown}");
}

#[test]
fn jobs_are_hidden_in_blind_mode() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "7");
    assert_ne!(app.view, View::Jobs, "blind mode has no Jobs view");
    assert!(app.jobs.runs.is_none(), "nothing read while blind");
    app.view = View::Jobs;
    keys(&mut app, &mut store, "n");
    assert!(app.jobs.form.is_none());
    assert_eq!(app.view, View::Rate);
}

/// Ratings in force, all raters.
fn rating_rows(store: &Store) -> i64 {
    store
        .conn()
        .query_row("select count(*) from ratings", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn blind_view_1_dashboard_shows_only_the_raters_own_progress() {
    let (_dir, mut store) = store_with_runs();
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "1");
    assert_eq!(app.view, View::Dashboard);
    let Some(Ok(summary)) = &app.dashboard else {
        panic!("dashboard loaded");
    };
    assert!(summary.raters.iter().all(|r| r.rater == "ann"));
    assert!(summary.queues.iter().all(|q| q.rater == "ann"));
    assert!(summary.runs.is_empty(), "no model runs while blind");
    assert!(summary.agreement.is_none());
    let text = screen(&app, 110, 30);
    assert!(!text.contains("bob"), "{text}");
    assert!(!text.contains("u-target"), "{text}");
    assert!(!text.contains("5 SQL"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn blind_view_2_images_show_no_rated_column_no_model_and_no_ratings() {
    let (_dir, mut store) = store_with_runs();
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "2");
    let page = app.images.page.as_ref().expect("page");
    assert!(
        page.rows
            .iter()
            .all(|r| r.rated_by == 0 && r.predicted.is_empty())
    );
    let text = screen(&app, 120, 30);
    assert!(!text.contains("rated"), "{text}");
    assert!(!text.contains("model"), "{text}");
    assert!(text.contains("ratings hidden (blind mode)"), "{text}");
    assert!(!text.contains("bob"), "{text}");
    // Filtering by who has rated an image would tell other raters' progress.
    keys(&mut app, &mut store, "x");
    assert_eq!(app.images.filter.rated, None);
    assert!(app.message.contains("hidden"), "{}", app.message);
    let detail = app.detail(1).and_then(|d| d.as_ref().ok()).expect("detail");
    assert!(detail.ratings.is_none() && detail.predictions.is_none());
}

#[test]
fn blind_views_3_and_4_viewer_and_rate_show_no_other_rating() {
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "3");
    assert_eq!(app.view, View::Viewer);
    let text = screen(&app, 100, 30);
    assert!(!text.contains("bob"), "{text}");
    keys(&mut app, &mut store, "4");
    assert_eq!(app.view, View::Rate);
    let text = screen(&app, 100, 30);
    assert!(!text.contains("bob"), "{text}");
    // Ann's own save is the one write a blind session makes.
    let before = rating_rows(&store);
    key(&mut app, &mut store, KeyCode::Enter);
    assert_eq!(rating_rows(&store), before + 1);
    // Neither the save nor its undo names the rating's id, which counts everyone's
    // saves (an earlier build listed "image 3 'd' (#31)" and "undid rating 31").
    let id: i64 = store
        .conn()
        .query_row("SELECT max(rating_id) FROM ratings", [], |r| r.get(0))
        .expect("the newest rating");
    let named =
        |text: &str| text.contains(&format!("#{id}")) || text.contains(&format!("rating {id}"));
    let text = screen(&app, 100, 30);
    assert!(
        !named(&text) && !named(&app.message),
        "{text}\n{}",
        app.message
    );
    keys(&mut app, &mut store, "u");
    let text = screen(&app, 100, 30);
    assert!(app.message.contains("undid"), "{}", app.message);
    assert!(
        !named(&text) && !named(&app.message),
        "{text}\n{}",
        app.message
    );
}

#[test]
fn blind_views_5_6_7_are_not_offered_and_no_sql_runs() {
    let (_dir, mut store) = filled_store();
    let mut app = App::new(KeyMap::default(), Some("ann".into()));
    let mut asked = Vec::new();
    super::handle(&mut app, &mut store, Event::Tick, &mut |r| asked.push(r));
    for number in ["5", "6", "7"] {
        let chord = KeyEvent::new(
            KeyCode::Char(number.chars().next().unwrap_or('5')),
            KeyModifiers::NONE,
        );
        super::handle(&mut app, &mut store, Event::Key(chord), &mut |r| {
            asked.push(r)
        });
        assert!(!matches!(app.view, View::Sql | View::Reports | View::Jobs));
    }
    for _ in 0..8 {
        super::handle(
            &mut app,
            &mut store,
            Event::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)),
            &mut |r| asked.push(r),
        );
        assert!(app.views().contains(&app.view), "{:?}", app.view);
    }
    // Placed on the SQL view by hand, a query and the write toggle still do nothing.
    app.view = View::Sql;
    app.sql.editor = crate::tui::sql::Editor::from_text("delete from ratings");
    for c in ['t', 'r'] {
        super::handle(
            &mut app,
            &mut store,
            Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)),
            &mut |r| asked.push(r),
        );
    }
    assert!(!app.sql.write);
    assert!(
        !asked.iter().any(|r| matches!(
            r,
            Request::Sql(_) | Request::Reports | Request::Runs | Request::OperatingPoint { .. }
        )),
        "{asked:?}"
    );
    assert_eq!(rating_rows(&store), 2);
    let text = screen(&app, 100, 30);
    for tab in ["5 SQL", "6 Reports", "7 Jobs"] {
        assert!(!text.contains(tab), "{text}");
    }
}

#[test]
fn a_stop_that_reaches_a_starting_worker_says_so() {
    use crate::jobs::plan::TrainRequest;
    use crate::tui::jobs::JobRequest;
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    open_jobs(&mut app, &mut store);
    let starting = app.jobs.add(&JobRequest::Train(TrainRequest {
        preset: Some("tiny".into()),
        epochs: Some(3),
        run: Some("usable-ssda-tiny-1".into()),
        ..TrainRequest::default()
    }));
    keys(&mut app, &mut store, "c");
    assert_eq!(app.jobs.jobs[0].status.label(), "stopping");
    // The interrupt arrived before the worker could catch it: it died of the signal.
    handle_now(
        &mut app,
        &mut store,
        Event::JobExited {
            id: starting,
            code: None,
        },
    );
    let job = &app.jobs.jobs[0];
    assert!(job.ended);
    assert!(
        app.message
            .contains("stopped while the worker was starting (nothing to keep)"),
        "{}",
        app.message
    );
    // A worker that dies of a signal nobody sent is reported as killed.
    let crashed = app.jobs.add(&JobRequest::Train(TrainRequest {
        preset: Some("tiny".into()),
        epochs: Some(3),
        run: Some("usable-ssda-tiny-2".into()),
        ..TrainRequest::default()
    }));
    handle_now(
        &mut app,
        &mut store,
        Event::JobExited {
            id: crashed,
            code: None,
        },
    );
    assert!(
        app.message.contains("the worker was killed"),
        "{}",
        app.message
    );
}

/// Every figure of `counts` is on `screen` whole: exactly (`1,000,000`) or in its
/// compact unit (`1.0M`), never as a digit string cut short.
fn assert_whole_figures(screen: &str, counts: &[i64]) {
    use super::ui::figures::{compact, exact};
    let whole = |text: &str| {
        screen.match_indices(text).any(|(at, _)| {
            let before = screen[..at].chars().next_back();
            let after = screen[at + text.len()..].chars().next();
            let digitish =
                |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == ',' || c == '.');
            !digitish(before) && !digitish(after)
        })
    };
    for &n in counts {
        assert!(
            whole(&exact(n)) || whole(&compact(n)),
            "{n} is neither shown as {} nor as {}:\n{screen}",
            exact(n),
            compact(n)
        );
    }
}

fn million_dashboard() -> crate::store::dashboard::DashboardSummary {
    use crate::store::dashboard::{
        AgreementGlance, DashboardSummary, QueueProgress, RaterProgress, SequenceCounts,
    };
    let rater = |name: &str, rated, rejected, later| RaterProgress {
        rater: name.into(),
        role: "rater".into(),
        images_rated: rated,
        rejected,
        review_later: later,
        last_saved: "11-28 14:05".into(),
    };
    DashboardSummary {
        sequences: vec![
            SequenceCounts {
                sequence: "FLAIR".into(),
                ok: 490_000,
                failed: 9_999,
                missing: 1,
            },
            SequenceCounts {
                sequence: "T1w".into(),
                ok: 1_000_000,
                failed: 999_999,
                missing: 9_999_999,
            },
        ],
        raters: vec![
            rater("r0", 750_002, 50_134, 1_000),
            rater("r1", 1_000_000, 999, 9_999_999),
            rater("r2", 999_999, 1_250_000, 0),
        ],
        queues: vec![QueueProgress {
            queue: "flair-1".into(),
            rater: "r0".into(),
            items: 1_000_000,
            pending: 249_998,
        }],
        runs: Vec::new(),
        refining: false,
        agreement: Some(vec![AgreementGlance {
            task: "usable".into(),
            images: 1_000_000,
            percent_agreement: Some(0.9),
            fleiss_kappa: Some(0.5),
            fleiss_images: 1_000_000,
            krippendorff_alpha: Some(0.5),
        }]),
    }
}

#[test]
fn dashboard_seven_digit_counts_are_never_cut() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    app.dashboard = Some(Ok(million_dashboard()));
    let counts = [
        490_000, 9_999, 1, 1_000_000, 999_999, 9_999_999, 750_002, 50_134, 1_000, 999, 0,
        1_250_000, 750_002,
    ];
    let small = screen(&app, 80, 24);
    assert_whole_figures(&small, &counts);
    insta::assert_snapshot!(small);
    // Wide enough, every figure is exact.
    let wide = screen(&app, 160, 30);
    for n in counts {
        assert!(
            wide.contains(&super::ui::figures::exact(n)),
            "{n} exact at 160 columns:\n{wide}"
        );
    }
}

/// The Latest runs panel at 80 columns: long run names give way with `…`, every status
/// and test BA stays whole; the kind and then the start time make room for the names
/// rather than leave them a few letters (a start time is shown whole or not at all).
#[test]
fn dashboard_latest_runs_give_way_at_80_columns() {
    use crate::store::dashboard::RunSummary;
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    let run = |run_id: &str, kind: &str, status: &str, ba: &str, started: &str| RunSummary {
        run_id: run_id.into(),
        kind: kind.into(),
        task: "usable".into(),
        status: status.into(),
        started_at: started.into(),
        test_balanced_accuracy: ba.into(),
    };
    let runs = vec![
        run(
            "usable-ssda-cpu-small-2026-11-28-14",
            "train",
            "interrupted",
            "",
            "10-01 14:05",
        ),
        run(
            "usable-ssda-tiny-1",
            "train",
            "completed",
            "0.929",
            "10-01 13:59",
        ),
        run("usable-iqm-forest-1", "train", "failed", "", "10-02 09:00"),
        run(
            "predict-usable-ssda-tiny-1-flair",
            "infer",
            "running",
            "",
            "10-02 08:30",
        ),
    ];
    let mut summary = million_dashboard();
    summary.runs = runs.clone();
    app.dashboard = Some(Ok(summary));
    let small = screen(&app, 80, 24);
    for r in &runs {
        for whole in [&r.status, &r.test_balanced_accuracy] {
            assert!(small.contains(whole.as_str()), "{whole} whole:\n{small}");
        }
        let tail: String = r
            .run_id
            .chars()
            .skip(r.run_id.chars().count() - 7)
            .collect();
        assert!(
            small.contains(&r.run_id[..8]) && small.contains(&tail),
            "{} keeps its first 8 and last 7 letters:\n{small}",
            r.run_id
        );
    }
    assert!(
        small.contains("usable-ssda-tiny-1 "),
        "a name that fits is whole:\n{small}"
    );
    assert!(
        small.contains("usable-ssd…-11-28-14 "),
        "long names give way in the middle:\n{small}"
    );
    // A start time is whole where the column is shown (10-0x: no other panel has it).
    let started_whole = runs.iter().all(|r| small.contains(&r.started_at));
    let started_shown = runs.iter().any(|r| small.contains(&r.started_at[..5]));
    assert!(started_whole || !started_shown, "{small}");
    insta::assert_snapshot!(small);
    // Wide enough, the names are whole and the kind shows.
    let wide = screen(&app, 160, 30);
    for r in &runs {
        for whole in [&r.run_id, &r.status, &r.started_at] {
            assert!(
                wide.contains(whole.as_str()),
                "{whole} at 160 columns:\n{wide}"
            );
        }
    }
    assert!(wide.contains("kind") && wide.contains("test BA"), "{wide}");
    // Between the two, the start time comes back before the kind.
    let medium = screen(&app, 110, 30);
    assert!(
        medium.contains("10-01 14:05") && medium.contains("usable-ssda-tiny-1 "),
        "{medium}"
    );
}

#[test]
fn images_seven_digit_ids_and_totals_are_never_cut() {
    use crate::store::dashboard::{ImageListRow, ImagePage};
    let (_dir, mut store) = filled_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "2");
    let rows: Vec<ImageListRow> = (0..200)
        .map(|i| ImageListRow {
            image_id: 9_999_800 + i,
            subject: format!("{}", 999_800 + i),
            session: "01".into(),
            suffix: "FLAIR".into(),
            status: "ok".into(),
            shape: "1024x1024x1024".into(),
            orientation: "RAS".into(),
            rated_by: 3,
            predicted: String::new(),
        })
        .collect();
    app.images.page = Some(ImagePage {
        offset: 999_800,
        total: 1_000_000,
        rows,
    });
    app.images.selected = 999_999;
    let small = screen(&app, 80, 24);
    assert!(small.contains("Images 1,000,000/1,000,000"), "{small}");
    assert!(small.contains("9999999 "), "the last id is whole:\n{small}");
    assert!(small.contains("1024x1024x1024"), "{small}");
    insta::assert_snapshot!(small);
}

#[test]
fn reports_seven_digit_counts_are_never_cut() {
    let (_dir, mut store) = store_with_runs();
    let mut app = app(&mut store, None);
    open_reports(&mut app, &mut store);
    let mut data = (*app.reports.data.clone().expect("loaded").expect("built")).clone();
    for task in &mut data.agreement.tasks {
        task.overall.images = 1_000_000;
        task.overall.images_multiply_rated = 750_002;
        for pair in &mut task.pairs {
            pair.n = 9_999_999;
        }
    }
    if let Some(comparison) = data.comparison.as_mut() {
        for run in &mut comparison.runs {
            run.images = 1_250_000;
        }
    }
    app.reports.data = Some(Ok(std::sync::Arc::new(data)));
    let small = screen(&app, 80, 24);
    assert_whole_figures(&small, &[1_000_000, 750_002, 9_999_999, 1_250_000]);
    insta::assert_snapshot!(small);
}

#[test]
fn jobs_seven_digit_progress_is_never_cut() {
    use crate::jobs::JobEvent;
    use crate::jobs::plan::{InferRequest, TrainRequest};
    use crate::tui::jobs::JobRequest;

    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    open_jobs(&mut app, &mut store);
    let infer = app.jobs.add(&JobRequest::Infer(InferRequest {
        run: Some("usable-ssda-1".into()),
        torchscript: None,
        preset: None,
        task: crate::report::agreement::Task::Usable,
        sequence: "FLAIR".into(),
        unrated: false,
        device: "cpu".into(),
    }));
    app.jobs.on_event(
        infer,
        &JobEvent::Progress {
            done: 1_000_000,
            total: 9_999_999,
        },
    );
    let train = app.jobs.add(&JobRequest::Train(TrainRequest {
        epochs: Some(1_000),
        run: Some("usable-ssda-big".into()),
        ..TrainRequest::default()
    }));
    app.jobs.on_event(
        train,
        &JobEvent::Started {
            first_epoch: 0,
            total_epochs: 1_000,
            device: "cpu".into(),
        },
    );
    app.jobs.on_event(
        train,
        &JobEvent::Batch {
            epoch: 999,
            batch: 1_250_000,
            batches: 2_500_000,
        },
    );
    // The newest job is listed first and selected: the training job's gauge.
    let small = screen(&app, 80, 24);
    assert!(small.contains("batch 1,250,000/2,500,000"), "{small}");
    assert!(small.contains("epoch 999/1,000"), "{small}");
    // In the narrow list the run names give way to the progress figures.
    assert!(
        small.contains("100%│") && small.contains(" 10%│"),
        "{small}"
    );
    keys(&mut app, &mut store, "j");
    let small = screen(&app, 80, 24);
    assert!(small.contains("1,000,000/9,999,999 images"), "{small}");
    insta::assert_snapshot!(small);
}

#[test]
fn sql_seven_digit_numbers_are_never_cut() {
    let (_dir, mut store) = empty_store();
    let app = sql_app(
        &mut store,
        "select 'r0' as rater, 1000000 as images, 750002 as ratings, 50134 as rejected, \
         9999999 as later, 1234567890123 as big, 1000000000000000000 as wide, \
         2000000000000000000 as wider",
    );
    let small = screen(&app, 80, 24);
    // The grid, below the editor that shows the query's text.
    let (_, grid) = small.split_once("Result").expect("a result");
    for n in [
        "1000000",
        "750002",
        "50134",
        "9999999",
        "1000000000000000000",
    ] {
        assert!(grid.contains(n), "{n}:\n{small}");
    }
    // The column that does not fit whole is left for scrolling right, not cut.
    assert!(!grid.contains("2000"), "{small}");
}

/// 30 FLAIR images of 15 subjects rated by ann (every fourth a reject), and two usable
/// runs: `u-ssda` with a stored temperature and predictions on its validation (the
/// first 6 subjects) and test images, whose reject scores overlap between the classes;
/// `u-target` with test predictions only.
fn store_with_operating_points() -> (tempfile::TempDir, Store) {
    let (dir, store) = empty_store();
    store
        .conn()
        .execute_batch(
            "INSERT INTO images (path, root, rel_path, status, subject, session, suffix,
                                 file_size, mtime_ns, manufacturer, field_strength)
             SELECT '/w/img' || i || '.nii.gz', '/w', 'img' || i, 'ok',
                    lpad(CAST((i - 1) // 2 AS VARCHAR), 2, '0'), '01', 'FLAIR', 100, 0,
                    'Siemens', 3.0
             FROM range(1, 31) t(i);
             INSERT INTO raters (name) VALUES ('ann');
             INSERT INTO ratings (image_id, rater, usable, gado, motion, contrast, noise, code,
                                  protocol_version, source, rated_at, saved_at)
             SELECT i, 'ann', i % 4 <> 0, false, 0, 0, 0, CASE WHEN i % 4 = 0 THEN 'r' ELSE '' END,
                    '1', 'test', '2026-01-02 11:00:00+00', '2026-01-02 11:00:00+00'
             FROM range(1, 31) t(i);
             INSERT INTO runs (run_id, kind, task, method, status, split_id, started_at, metrics)
             VALUES ('u-ssda', 'train', 'usable', 'ssda', 'completed', 'u-ssda',
                     '2026-01-04 09:00:00+00', '{\"calibration\": {\"temperature\": 1.5}}'),
                    ('u-target', 'train', 'usable', 'target-only', 'completed', 'u-target',
                     '2026-01-04 10:00:00+00', NULL);
             INSERT INTO splits
             SELECT 'u-ssda', i, lpad(CAST((i - 1) // 2 AS VARCHAR), 2, '0'), 'target',
                    CASE WHEN i <= 12 THEN 'validation' ELSE 'test' END, NULL
             FROM range(1, 31) t(i);
             INSERT INTO splits
             SELECT 'u-target', i, lpad(CAST((i - 1) // 2 AS VARCHAR), 2, '0'), 'target', 'test', NULL
             FROM range(13, 31) t(i);
             CREATE TEMP TABLE scores AS
             SELECT i, CASE WHEN i % 4 = 0 THEN 0.35 + (i % 7) * 0.08
                            ELSE 0.05 + (i % 9) * 0.07 END AS p
             FROM range(1, 31) t(i);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities, predicted_at)
             SELECT 'u-ssda', i, 'usable', CASE WHEN p >= 0.5 THEN 'reject' ELSE 'usable' END,
                    [1 - p, p], '2026-01-05 09:00:00+00'
             FROM scores;
             INSERT INTO predictions (run_id, image_id, task, label, probabilities, predicted_at)
             SELECT 'u-target', i, 'usable', 'usable', [0.7, 0.3], '2026-01-05 10:00:00+00'
             FROM scores WHERE i > 12;",
        )
        .expect("runs, splits and predictions");
    (dir, store)
}

#[test]
fn reports_show_the_selected_runs_operating_point_and_triage_band() {
    use crate::report::model::{ModelOptions, build};
    let (_dir, mut store) = store_with_operating_points();
    let mut app = app(&mut store, None);
    open_reports(&mut app, &mut store);
    assert_eq!(app.reports.selected_run().as_deref(), Some("u-ssda"));
    let view = app
        .reports
        .operating_view()
        .expect("computed")
        .clone()
        .expect("built");
    // The CLI's own numbers: `cdwqc report model --target-sensitivity 0.95 --triage 0.95`.
    let cli = build(
        &store,
        "u-ssda",
        &ModelOptions {
            target: Some(crate::metrics::OperatingTarget::Sensitivity(0.95)),
            triage: Some(0.95),
            ..ModelOptions::thresholds_only()
        },
    )
    .expect("report");
    assert_eq!(view.calibration.temperature, Some(1.5));
    let op = view.operating_point.as_ref().expect("operating point");
    let cli_op = cli.operating_point.as_ref().expect("operating point");
    assert_eq!(op.threshold.value, cli_op.threshold.value);
    // By hand: validation rejects score 0.67, 0.43, 0.75; all three reached at 0.43.
    assert!((op.threshold.value.expect("threshold") - 0.43).abs() < 1e-9);
    let t = view.triage.as_ref().expect("triage");
    let cli_t = cli.triage.as_ref().expect("triage");
    assert_eq!(
        (t.accepted, t.rejected, t.to_review),
        (cli_t.accepted, cli_t.rejected, cli_t.to_review)
    );
    assert_eq!(t.accepted + t.rejected + t.to_review, 18);
    // The highest usable validation score is 0.54, the next one up 0.67.
    assert!((t.reject_from.value.expect("reject") - 0.605).abs() < 1e-9);
    insta::assert_snapshot!(screen(&app, 80, 24));
    insta::assert_snapshot!(
        "reports_operating_point_wide_with_the_chart",
        screen(&app, 140, 30)
    );

    // A run without validation predictions says why it has no threshold.
    keys(&mut app, &mut store, "j");
    assert_eq!(app.reports.selected_run().as_deref(), Some("u-target"));
    insta::assert_snapshot!(
        "reports_run_without_validation_images",
        screen(&app, 80, 24)
    );
}

#[test]
fn the_target_key_only_asks_for_the_operating_point_in_the_background() {
    let (_dir, mut store) = store_with_operating_points();
    let mut app = app(&mut store, None);
    open_reports(&mut app, &mut store);
    // The key changes the target and asks the reader; nothing is computed in the key.
    let mut asked = Vec::new();
    super::handle(
        &mut app,
        &mut store,
        Event::Key(KeyEvent::new(KeyCode::Char('o'), KeyModifiers::NONE)),
        &mut |r| asked.push(r),
    );
    assert_eq!(
        asked,
        [Request::OperatingPoint {
            run_id: "u-ssda".into(),
            target: 2
        }]
    );
    assert!(app.reports.operating_view().is_none(), "not computed yet");
    insta::assert_snapshot!("reports_operating_point_computing", screen(&app, 80, 24));
    // Served, it is kept: back at 0.95 nothing is asked again.
    for request in asked {
        let response = super::serve(&store, request);
        super::handle(&mut app, &mut store, Event::Loaded(response), &mut |_| {});
    }
    let strict = app
        .reports
        .operating_view()
        .expect("kept")
        .clone()
        .expect("built");
    let op = strict.operating_point.as_ref().expect("operating point");
    assert_eq!(op.target_value, 0.99);
    let mut again = Vec::new();
    for _ in 0..2 {
        super::handle(
            &mut app,
            &mut store,
            Event::Key(KeyEvent::new(KeyCode::Char('o'), KeyModifiers::NONE)),
            &mut |r| again.push(r),
        );
    }
    // 0.99 -> 0.90 (never asked yet: asked now) -> 0.95 (kept: not asked again).
    assert_eq!(
        again,
        [Request::OperatingPoint {
            run_id: "u-ssda".into(),
            target: 0
        }]
    );
    assert_eq!(app.reports.target(), 0.95);
}

#[test]
fn queue_reasons_show_outside_blind_mode_and_stay_hidden_while_rating_blind() {
    use crate::store::queues::{ItemReason, QueueAssignment, QueueOrigin};
    let (_dir, mut store) = filled_store();
    let origin = QueueOrigin {
        strategy: "uncertainty".into(),
        run_id: Some("r-2026-01-03".into()),
        ..QueueOrigin::default()
    };
    let reasons = std::collections::HashMap::from([
        (
            4,
            ItemReason {
                reason: "uncertain".into(),
                score: Some(0.9713),
                domain_distance: Some(2.5),
            },
        ),
        (
            2,
            ItemReason {
                reason: "random".into(),
                score: None,
                domain_distance: None,
            },
        ),
    ]);
    store
        .create_queue(
            "al-1",
            None,
            0.0,
            1,
            &origin,
            &reasons,
            &[QueueAssignment {
                rater: "ann".into(),
                images: vec![(4, false), (2, false)],
            }],
            &[],
        )
        .expect("queue");
    // Ann's first queue (made before reasons were stored) comes first: rate it away.
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "4");
    assert_eq!(app.rate.work, Some(vec![3, 1, 5, 4, 2]));
    let old = screen(&app, 110, 30);
    assert!(old.contains("queue flair-1"), "{old}");
    assert!(
        !old.contains("picked from"),
        "an old queue has no strategy: {old}"
    );
    for _ in 0..3 {
        keys(&mut app, &mut store, "n");
    }
    assert_eq!(app.rate.current(), Some(4));
    let blind = screen(&app, 110, 30);
    assert!(blind.contains("queue al-1"), "{blind}");
    for model_output in [
        "entropy",
        "0.971",
        "uncertain",
        "random",
        "domain",
        "r-2026",
    ] {
        assert!(!blind.contains(model_output), "{model_output}: {blind}");
    }
    insta::assert_snapshot!("rate_blind_queue_reason_hidden", blind);
    keys(&mut app, &mut store, "n");
    assert_eq!(app.rate.current(), Some(2));
    let random = screen(&app, 110, 30);
    assert!(!random.contains("random"), "{random}");
    // Nothing of the reason is even read while blind.
    assert!(app.details.values().all(|d| match d {
        Ok(d) => d.queued.is_none(),
        Err(_) => true,
    }));

    // The data manager sees each image's reason in the Images view's detail pane.
    let mut manager = super::tests::app(&mut store, None);
    keys(&mut manager, &mut store, "2");
    for _ in 0..3 {
        keys(&mut manager, &mut store, "j");
    }
    assert_eq!(manager.selected_image(), Some(4));
    let detail = screen(&manager, 140, 30);
    for line in [
        "queued al-1 for ann:",
        "  uncertain: entropy 0.971 bits",
        "  run r-2026-01-03",
        "  2.500 bits from the target domain",
    ] {
        assert!(detail.contains(line), "{line}: {detail}");
    }
    insta::assert_snapshot!("images_detail_shows_why_an_image_was_queued", detail);
    keys(&mut manager, &mut store, "k");
    keys(&mut manager, &mut store, "k");
    assert_eq!(manager.selected_image(), Some(2));
    let detail = screen(&manager, 140, 30);
    assert!(
        detail.contains("random share (unbiased accuracy)"),
        "{detail}"
    );
    // Image 3 sits in the old queue only: no reason stored, none shown.
    keys(&mut manager, &mut store, "j");
    assert_eq!(manager.selected_image(), Some(3));
    let detail = screen(&manager, 140, 30);
    assert!(!detail.contains("queued"), "{detail}");
}

#[test]
fn the_queue_key_picks_the_triage_band_then_stores_it_for_every_rater() {
    let (_dir, mut store) = store_with_operating_points();
    // Four test images lose their rating: 15 (P 0.47) and 16 (0.51) sit in the band
    // [0.43, 0.605), 17 (0.61) is rejected by the model and 18 (0.05) accepted.
    store
        .conn()
        .execute_batch("DELETE FROM ratings WHERE image_id IN (15, 16, 17, 18)")
        .expect("unrated images");
    let mut app = app(&mut store, None);
    open_reports(&mut app, &mut store);
    keys(&mut app, &mut store, "Q");
    assert!(
        app.message.starts_with(
            "triage of 4 unrated images by run u-ssda at 0.95: P(reject) < 0.4300 accepted (1), >= 0.6050 rejected (1), 2 to review"
        ),
        "{}",
        app.message
    );
    assert!(
        app.message.ends_with("Q again stores it"),
        "{}",
        app.message
    );
    let queues = |store: &Store| -> i64 {
        store
            .conn()
            .query_row("SELECT count(*) FROM queues", [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(queues(&store), 0, "the first press stores nothing");
    keys(&mut app, &mut store, "Q");
    assert_eq!(
        app.message,
        "queue triage-u-ssda-0.95: 2 images, 0 shared by all 1 raters"
    );
    let items: Vec<(i64, String, f64)> = store
        .conn()
        .prepare(
            "SELECT i.image_id, q.strategy || ' ' || i.reason, i.score FROM queue_items i
             JOIN queues q USING (queue_id) ORDER BY i.image_id",
        )
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!((items[0].0, items[0].1.as_str()), (15, "triage triage"));
    assert!((items[0].2 - 0.47).abs() < 1e-9 && (items[1].2 - 0.51).abs() < 1e-9);
    // Twice more: the same name is refused and nothing else is stored.
    keys(&mut app, &mut store, "QQ");
    assert!(app.message.contains("exists already"), "{}", app.message);
    assert_eq!(queues(&store), 1);
}

/// Ten images of one Siemens 3 T scanner with previews: eight T1w (1-6 measured, 7 with
/// metrics that failed, 8 never measured) and two FLAIR (9-10, a group too small to
/// flag). With `spike`, image 3's FBER and QI1 are far out of its group.
fn iqm_store(spike: bool) -> (tempfile::TempDir, Store) {
    let (dir, store) = empty_store();
    let (fber, qi_1) = if spike {
        (50000.0, 0.5)
    } else {
        (2030.0, 0.003)
    };
    store
        .conn()
        .execute_batch(&format!(
            "INSERT INTO images (path, root, rel_path, status, subject, session, suffix,
                                 file_size, mtime_ns, dim_x, dim_y, dim_z, voxel_x, voxel_y,
                                 voxel_z, datatype, orientation, manufacturer, field_strength)
             SELECT '/w/sub-0' || i || '/img' || i || '.nii.gz', '/w', 'img' || i, 'ok',
                    '0' || i, '01', CASE WHEN i <= 8 THEN 'T1w' ELSE 'FLAIR' END,
                    100, 0, 176, 240, 256, 1.0, 1.0, 1.0, 'int16', 'RAS', 'Siemens', 3.0
             FROM range(1, 11) t(i);
             INSERT INTO iqms (image_id, iqm_version, sha256, contrast, seconds, snr_total,
                               snrd_total, cnr, cjv, efc, fber, wm2max, qi_1, fwhm_avg,
                               inu_range)
             SELECT i, 1, 'h' || i, 'T1w', 0.1, 10 + i * 0.5, 20 + i, 3 + i * 0.1,
                    0.5 + i * 0.01, 0.5 + i * 0.005,
                    CASE WHEN i = 3 THEN {fber} ELSE 2000 + i * 10 END, 0.5 + i * 0.01,
                    CASE WHEN i = 3 THEN {qi_1} ELSE 0.001 * i END, 3 + 0.1 * i,
                    0.2 + 0.01 * i
             FROM range(1, 11) t(i) WHERE i NOT IN (7, 8);
             INSERT INTO iqms (image_id, iqm_version, contrast, error)
             VALUES (7, 1, 'T1w', 'no head: the image has no signal above the air');"
        ))
        .expect("fixture rows");
    let gradient = Gray8 {
        width: 16,
        height: 16,
        pixels: (0..256).map(|i| i as u8).collect(),
    };
    let png = gradient.to_png().expect("png");
    for image_id in 1..=10i64 {
        for plane in ["axial", "coronal", "sagittal"] {
            store
                .conn()
                .execute(
                    "INSERT INTO previews VALUES (?, ?, 16, 16, ?)",
                    duckdb::params![image_id, plane, png],
                )
                .expect("preview");
        }
    }
    crate::store::summaries::repair(store.conn()).expect("summaries");
    (dir, store)
}

/// The Images view with image `image_id` (1-based, in id order) selected.
fn iqm_app(store: &mut Store, image_id: i64) -> App {
    let mut app = app(store, None);
    keys(&mut app, store, "2");
    for _ in 1..image_id {
        key(&mut app, store, KeyCode::Down);
    }
    assert_eq!(app.selected_image(), Some(image_id));
    app
}

#[test]
fn images_iqms_of_a_flagged_image() {
    let (_dir, mut store) = iqm_store(true);
    let app = iqm_app(&mut store, 3);
    assert!(
        matches!(&app.iqm_groups, Some(Ok(_))),
        "{:?}",
        app.iqm_groups
    );
    let small = screen(&app, 80, 24);
    assert!(small.contains("2 outliers"), "{small}");
    assert!(small.contains("fber  5e4 "), "{small}");
    assert!(small.contains("!"), "{small}");
    insta::assert_snapshot!("images_iqms_flagged_small", small);
    let wide = screen(&app, 130, 34);
    // Wide enough for all ten metrics, three to a line.
    assert!(wide.contains("snrd"), "{wide}");
    insta::assert_snapshot!("images_iqms_flagged_wide", wide);
}

#[test]
fn images_iqms_without_outliers_and_without_metrics() {
    let (_dir, mut store) = iqm_store(true);
    let mut app = iqm_app(&mut store, 2);
    let measured = screen(&app, 80, 24);
    assert!(
        measured.contains(" IQMs ") && !measured.contains("outlier"),
        "{measured}"
    );
    assert!(measured.contains("z in 6 T1w SIEMENS 3.0T"), "{measured}");
    insta::assert_snapshot!("images_iqms_measured_small", measured);
    keys(&mut app, &mut store, "jjjjj");
    assert_eq!(app.selected_image(), Some(7));
    let failed = screen(&app, 80, 24);
    assert!(failed.contains("no IQMs: no head"), "{failed}");
    key(&mut app, &mut store, KeyCode::Down);
    let none = screen(&app, 80, 24);
    assert!(
        none.contains("no IQMs (import --no-iqm;") && none.contains("run `cdwqc iqm`)"),
        "{none}"
    );
    insta::assert_snapshot!("images_iqms_none_small", none);
    insta::assert_snapshot!("images_iqms_none_wide", screen(&app, 130, 34));
    // FLAIR: two images, scored but never flagged.
    keys(&mut app, &mut store, "j");
    let flair = screen(&app, 80, 24);
    assert!(flair.contains("(< 5: no flags)"), "{flair}");
}

#[test]
fn iqm_scores_of_the_dashboard_equal_the_outlier_view() {
    let (_dir, store) = iqm_store(true);
    let groups = store.iqm_groups().expect("groups");
    assert_eq!(groups.iqm_version, Some(1));
    let mut flagged = Vec::new();
    for image_id in 1..=10 {
        let Some(iqms) = store.image_iqms(image_id).expect("iqms") else {
            assert_eq!(image_id, 8);
            continue;
        };
        let mut view: Vec<(String, Option<f64>, bool)> = store
            .conn()
            .prepare(
                "SELECT metric, robust_z, outlier FROM iqm_outliers WHERE image_id = ?
                 ORDER BY metric",
            )
            .expect("view")
            .query_map(duckdb::params![image_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("view")
            .collect::<Result<_, _>>()
            .expect("view");
        view.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ours: Vec<(String, Option<f64>, bool)> = groups
            .score(&iqms)
            .into_iter()
            .filter(|s| s.value.is_some())
            .map(|s| (s.metric.to_string(), s.robust_z, s.outlier))
            .collect();
        ours.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(ours, view, "image {image_id}");
        if ours.iter().any(|s| s.2) {
            flagged.push(image_id);
        }
    }
    assert_eq!(flagged, [3]);
}

/// The image ids of the Images view's current page.
fn page_ids(app: &App) -> Vec<i64> {
    app.images
        .page
        .as_ref()
        .map(|p| p.rows.iter().map(|r| r.image_id).collect())
        .unwrap_or_default()
}

/// `(image_id, outlier)` of every row of `sql`, in image order.
fn flag_rows(store: &Store, sql: &str) -> Vec<(i64, bool)> {
    store
        .conn()
        .prepare(&format!(
            "SELECT image_id, outlier FROM (\n{sql}\n) ORDER BY 1"
        ))
        .expect("flags")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("flags")
        .collect::<Result<_, _>>()
        .expect("flags")
}

#[test]
fn shared_outlier_flags_equal_the_views_on_every_image() {
    for spike in [true, false] {
        let (_dir, store) = iqm_store(spike);
        // Harder rows: a second scanner group (GE 1.5T) of seven images where one
        // metric has a MAD of 0, one value is missing, one is NaN, one image spikes on
        // EFC and one has no metric at all; an older metric version of image 1 with
        // values that would be outliers; a FLAIR image without a sequence.
        store
            .conn()
            .execute_batch(
                "INSERT INTO images (path, root, rel_path, status, subject, session, suffix,
                                     file_size, mtime_ns, dim_x, dim_y, dim_z, voxel_x,
                                     voxel_y, voxel_z, datatype, orientation, manufacturer,
                                     field_strength)
                 SELECT '/w/sub-1' || i || '/img' || i || '.nii.gz', '/w', 'img' || i, 'ok',
                        '1' || i, '01', CASE WHEN i = 18 THEN NULL ELSE 'T1w' END,
                        100, 0, 176, 240, 256, 1.0, 1.0, 1.0, 'int16', 'RAS', 'GE', 1.5
                 FROM range(11, 19) t(i);
                 INSERT INTO iqms (image_id, iqm_version, sha256, contrast, seconds, snr_total,
                                   snrd_total, cnr, cjv, efc, fber, wm2max, qi_1, fwhm_avg,
                                   inu_range)
                 SELECT i, 1, 'h' || i, 'T1w', 0.1, 5.0, 20 + i,
                        CASE WHEN i = 12 THEN NULL ELSE 3 + i * 0.1 END,
                        CASE WHEN i = 13 THEN 'NaN'::DOUBLE ELSE 0.5 + i * 0.01 END,
                        CASE WHEN i = 14 THEN 40.0 ELSE 0.5 + i * 0.005 END,
                        2000 + i * 10, 0.5 + i * 0.01, 0.001 * i, 3 + 0.1 * i, 0.2 + 0.01 * i
                 FROM range(11, 19) t(i) WHERE i <> 17;
                 INSERT INTO iqms (image_id, iqm_version, sha256, contrast, seconds)
                 VALUES (17, 1, 'h17', 'T1w', 0.1);
                 INSERT INTO iqms (image_id, iqm_version, sha256, contrast, seconds, fber)
                 VALUES (1, 0, 'h1', 'T1w', 0.1, 1e12);",
            )
            .expect("harder rows");
        let view = flag_rows(&store, include_str!("../../sql/store/image_iqm_flags.sql"));
        assert!(view.contains(&(14, true)), "{view:?}");
        assert_eq!(view.iter().any(|&(id, flag)| id == 3 && flag), spike);
        assert!(
            !view
                .iter()
                .any(|&(id, _)| id == 17 || id == 18 || id == 7 || id == 8)
        );
        let groups = store.iqm_groups_with_shared_flags(4).expect("groups");
        assert_eq!(groups, store.iqm_groups().expect("groups"));
        assert!(store.shared_flags_ready(4).expect("ready"));
        let shared = flag_rows(&store, &format!("SELECT * FROM {}", shared_flags_table(4)));
        assert_eq!(shared, view, "spike {spike}");
        // A later epoch drops the earlier table; an earlier one leaves the later.
        store.iqm_groups_with_shared_flags(6).expect("groups");
        assert!(!store.shared_flags_ready(4).expect("ready"));
        store.iqm_groups_with_shared_flags(5).expect("groups");
        assert!(store.shared_flags_ready(6).expect("ready"));
    }
}

#[test]
fn the_iqm_filter_joins_the_flags_built_with_the_groups() {
    let (_dir, mut store) = iqm_store(true);
    let own_table = |store: &Store| -> i64 {
        store
            .conn()
            .query_row(
                "SELECT count(*) FROM duckdb_tables()
                 WHERE database_name = 'temp' AND table_name = 'iqm_flag_cache'",
                [],
                |r| r.get(0),
            )
            .expect("tables")
    };
    let ids = page_ids;
    // Opening the Images view reads the groups, and with them the flags of its epoch.
    let mut app = iqm_app(&mut store, 1);
    let epoch = app.images.filter.iqm_epoch;
    assert!(store.shared_flags_ready(epoch).expect("ready"));
    keys(&mut app, &mut store, "o");
    assert_eq!(ids(&app), [3]);
    assert_eq!(own_table(&store), 0, "the filter computed the flags again");
    // A changed metric is seen after a refresh, through the next epoch's shared flags.
    store
        .conn()
        .execute_batch("UPDATE iqms SET fber = 1e9 WHERE image_id = 5")
        .expect("another outlier");
    keys(&mut app, &mut store, "o");
    keys(&mut app, &mut store, "o");
    keys(&mut app, &mut store, "o");
    assert_eq!(ids(&app), [3], "the same epoch keeps its flags");
    ctrl(&mut app, &mut store, 'l');
    assert!(store.shared_flags_ready(epoch + 1).expect("ready"));
    assert!(!store.shared_flags_ready(epoch).expect("ready"));
    assert_eq!(ids(&app), [3, 5]);
    assert_eq!(own_table(&store), 0);
}

#[test]
fn the_iqm_filter_waits_for_the_groups_instead_of_computing_the_flags() {
    let (_dir, mut store) = iqm_store(true);
    let mut app = iqm_app(&mut store, 1);
    // As if the groups' thread had not answered yet (a million images: about a second).
    app.iqm_groups = None;
    let effects = app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('o'),
        KeyModifiers::NONE,
    )));
    assert!(app.outlier_flags_pending());
    let pages = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Fetch(Request::ImagePage { .. })))
            .count()
    };
    assert_eq!(pages(&effects), 0, "{effects:?}");
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Fetch(Request::IqmGroups { .. }))),
        "{effects:?}"
    );
    let text = screen(&app, 80, 24);
    assert!(
        text.contains("computing every image's IQM outlier"),
        "{text}"
    );
    // Groups of an earlier epoch are not taken for this one's.
    let epoch = app.images.filter.iqm_epoch;
    let stale = app.update(Event::Loaded(Response::IqmGroups {
        epoch: epoch.wrapping_sub(1),
        result: Ok(std::sync::Arc::new(store.iqm_groups().expect("groups"))),
    }));
    assert!(app.outlier_flags_pending() && pages(&stale) == 0);
    // This epoch's groups (and with them the flags) let the page be read.
    let groups = store.iqm_groups_with_shared_flags(epoch).expect("groups");
    handle_now(
        &mut app,
        &mut store,
        Event::Loaded(Response::IqmGroups {
            epoch,
            result: Ok(std::sync::Arc::new(groups)),
        }),
    );
    assert!(!app.outlier_flags_pending());
    assert_eq!(page_ids(&app), [3]);
}

#[test]
fn images_filter_by_iqm_outlier_with_and_without_outliers() {
    use crate::store::dashboard::ImageFilter;
    for spike in [true, false] {
        let (_dir, mut store) = iqm_store(spike);
        let mut app = app(&mut store, None);
        keys(&mut app, &mut store, "2");
        let total = |app: &App| app.images.page.as_ref().map_or(0, |p| p.total);
        let ids = page_ids;
        assert_eq!(total(&app), 10);
        keys(&mut app, &mut store, "o");
        assert_eq!(app.images.filter.iqm_outlier, Some(true));
        if spike {
            assert_eq!(ids(&app), [3]);
            let text = screen(&app, 80, 24);
            assert!(text.contains("Images 1/1 · IQM outliers"), "{text}");
        } else {
            assert_eq!(total(&app), 0);
            let text = screen(&app, 80, 24);
            assert!(text.contains("no image matches these filters"), "{text}");
        }
        // Measured and not flagged: not 7 (failed) nor 8 (never measured).
        keys(&mut app, &mut store, "o");
        assert_eq!(app.images.filter.iqm_outlier, Some(false));
        let clean: Vec<i64> = if spike {
            vec![1, 2, 4, 5, 6, 9, 10]
        } else {
            vec![1, 2, 3, 4, 5, 6, 9, 10]
        };
        assert_eq!(ids(&app), clean);
        assert!(screen(&app, 110, 30).contains("· no IQM outlier"));
        keys(&mut app, &mut store, "o");
        assert_eq!(app.images.filter, ImageFilter::default());
        assert_eq!(total(&app), 10);

        // With the other filters, from the summaries and from scratch alike.
        let filter = |sequence: &str, outlier: bool| ImageFilter {
            sequence: Some(sequence.to_string()),
            subject: Some("0".into()),
            iqm_outlier: Some(outlier),
            ..ImageFilter::default()
        };
        for fresh in [true, false] {
            if !fresh {
                crate::store::summaries::mark_stale(store.conn()).expect("stale");
                assert!(!store.summaries_fresh());
            }
            let page = |f: &ImageFilter| store.image_page(f, 0, 200, None).expect("page");
            assert_eq!(page(&filter("T1w", true)).total, usize::from(spike));
            assert_eq!(page(&filter("FLAIR", true)).total, 0);
            assert_eq!(page(&filter("FLAIR", false)).total, 2);
            assert_eq!(page(&filter("T1w", false)).total, if spike { 5 } else { 6 });
            // A later page knows its total and keeps it past the end.
            let past = store
                .image_page(&filter("T1w", false), 200, 200, None)
                .expect("page");
            assert_eq!(
                (past.total, past.rows.len()),
                (if spike { 5 } else { 6 }, 0)
            );
        }
    }
}

#[test]
fn outlier_flags_are_computed_once_per_epoch_and_again_after_a_refresh() {
    use crate::store::dashboard::ImageFilter;
    let (_dir, mut store) = iqm_store(true);
    let outliers = |store: &Store, epoch: u64| -> Vec<i64> {
        let filter = ImageFilter {
            iqm_outlier: Some(true),
            iqm_epoch: epoch,
            ..ImageFilter::default()
        };
        let page = store.image_page(&filter, 0, 200, None).expect("page");
        page.rows.iter().map(|r| r.image_id).collect()
    };
    assert_eq!(outliers(&store, 0), [3]);
    store
        .conn()
        .execute_batch("UPDATE iqms SET fber = 1e9 WHERE image_id = 5")
        .expect("another outlier");
    // The same epoch pages through the flags it computed; a new one sees the change.
    assert_eq!(outliers(&store, 0), [3]);
    assert_eq!(outliers(&store, 1), [3, 5]);
    // The dashboard moves to a new epoch on a refresh (and after SQL that wrote).
    let mut app = app(&mut store, None);
    let before = app.images.filter.iqm_epoch;
    ctrl(&mut app, &mut store, 'l');
    assert_eq!(app.images.filter.iqm_epoch, before + 1);
}

#[test]
fn blind_mode_neither_reads_nor_shows_iqms() {
    let (_dir, mut store) = iqm_store(true);
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "2jj");
    assert_eq!(app.selected_image(), Some(3));
    assert!(app.iqm_groups.is_none());
    let detail = app.detail(3).and_then(|d| d.as_ref().ok()).expect("detail");
    assert!(detail.iqms.is_none());
    keys(&mut app, &mut store, "o");
    assert_eq!(app.images.filter.iqm_outlier, None);
    assert!(app.message.contains("hidden"), "{}", app.message);
    // Nor are the outlier flags computed behind the rater's back.
    assert!(
        !store
            .shared_flags_ready(app.images.filter.iqm_epoch)
            .expect("ready")
    );
    let text = screen(&app, 110, 30);
    assert!(text.contains("IQMs hidden (blind mode)"), "{text}");
    assert!(
        !text.contains("outlier") && !text.contains("fber"),
        "{text}"
    );
}
