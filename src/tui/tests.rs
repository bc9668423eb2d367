//! Snapshot tests of every view (drawn on ratatui's TestBackend, no terminal) and
//! tests of key handling, driving the app state against a temporary store.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{App, Effect, Event, Request};
use super::keys::{KeyMap, View};
use super::{handle_now, ui};
use crate::imaging::preview::Gray8;
use crate::store::Store;

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
             INSERT INTO queue_items VALUES (1, 'ann', 0, 3, true), (1, 'ann', 1, 1, false),
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
    (dir, store)
}

fn app(store: &mut Store, rater: Option<&str>) -> App {
    let mut app = App::new(KeyMap::default(), rater.map(str::to_string));
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
    let mut app = app(&mut store, Some("ann"));
    keys(&mut app, &mut store, "2");
    let text = screen(&app, 110, 30);
    assert!(text.contains("ratings hidden (blind mode)"), "{text}");
    assert!(!text.contains("bob:"), "{text}");
    insta::assert_snapshot!(text);
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
    assert_eq!(app.rate.saved.last().map(|s| s.1), Some(3));
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
fn sql_placeholder_names_the_command() {
    let (_dir, mut store) = empty_store();
    let mut app = app(&mut store, None);
    keys(&mut app, &mut store, "5");
    assert_eq!(app.view, View::Sql);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

/// The filled store plus ann's ratings (so there is a rater pair) and two runs with
/// held-out predictions: ssda and the target-only baseline.
fn store_with_runs() -> (tempfile::TempDir, Store) {
    let (dir, store) = filled_store();
    store
        .conn()
        .execute_batch(
            "INSERT INTO ratings (image_id, rater, usable, gado, motion, contrast, noise, code,
                                  protocol_version, source, rated_at, saved_at)
             SELECT i, 'ann', i NOT IN (2, 3), false, 0, 0, 0, CASE WHEN i IN (2, 3) THEN 'r' ELSE '' END,
                    '1', 'test', '2026-01-02 11:00:00+00', '2026-01-02 11:00:00+00'
             FROM range(1, 6) t(i);
             INSERT INTO runs (run_id, kind, task, method, status, split_id, started_at)
             VALUES ('u-ssda', 'train', 'usable', 'ssda', 'completed', 'u-ssda', '2026-01-04 09:00:00+00'),
                    ('u-target', 'train', 'usable', 'target-only', 'completed', 'u-target', '2026-01-04 10:00:00+00');
             INSERT INTO splits SELECT s.run, i, '0' || (i % 3 + 1), 'target', 'test', NULL
             FROM range(1, 6) t(i), (VALUES ('u-ssda'), ('u-target')) s(run);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities)
             SELECT 'u-ssda', i, 'usable', CASE WHEN i = 3 THEN 'reject' ELSE 'usable' END,
                    CASE WHEN i = 3 THEN [0.2, 0.8] ELSE [0.9, 0.1] END
             FROM range(1, 6) t(i);
             INSERT INTO predictions (run_id, image_id, task, label, probabilities)
             SELECT 'u-target', i, 'usable', 'usable', [0.7, 0.3] FROM range(1, 6) t(i);",
        )
        .expect("runs and predictions");
    (dir, store)
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
    open_reports(&mut app, &mut store);
    assert!(app.reports.data.is_none(), "nothing computed while blind");
    let text = screen(&app, 80, 24);
    assert!(text.contains("hidden in blind rating mode"), "{text}");
    keys(&mut app, &mut store, "e");
    assert!(app.message.contains("hidden"), "{}", app.message);
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
