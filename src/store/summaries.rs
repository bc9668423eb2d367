//! Per-image summaries of the ratings and predictions (`images.raters_in_force`,
//! `raters_usable`, `raters_reject`, `usable_prediction`, migration 011), which let
//! the image browser filter a million images by rated and by model without reading
//! every rating: recomputed for the images a store write touches, in its transaction,
//! and repaired in full after ad-hoc SQL that may write.

use duckdb::{Connection, params};

use super::{Access, Store, StoreError};

/// The image ids as the refresh statements take them: a BIGINT[] written as text.
fn id_list(image_ids: impl IntoIterator<Item = i64>) -> String {
    let ids: Vec<String> = image_ids.into_iter().map(|id| id.to_string()).collect();
    format!("[{}]", ids.join(","))
}

/// Recomputes the rating summaries of `image_ids` on `conn` (inside the caller's
/// transaction, after its ratings are written).
pub(crate) fn refresh_ratings(
    conn: &Connection,
    image_ids: impl IntoIterator<Item = i64>,
) -> duckdb::Result<()> {
    conn.prepare(include_str!("../../sql/store/summary_ratings_refresh.sql"))?
        .execute(params![id_list(image_ids)])
        .map(|_| ())
}

/// Recomputes the predicted label of `image_ids` on `conn` (inside the caller's
/// transaction, after its predictions are written).
pub(crate) fn refresh_predictions(
    conn: &Connection,
    image_ids: impl IntoIterator<Item = i64>,
) -> duckdb::Result<()> {
    conn.prepare(include_str!(
        "../../sql/store/summary_predictions_refresh.sql"
    ))?
    .execute(params![id_list(image_ids)])
    .map(|_| ())
}

/// Advances the row counts the summaries were last made for by what the caller's
/// transaction added (the summaries of the images it wrote are refreshed too), so that
/// rows another tool adds show as a difference.
pub(crate) fn advance_counts(
    conn: &Connection,
    ratings: i64,
    predictions: i64,
) -> duckdb::Result<()> {
    conn.prepare(
        "UPDATE image_summary_state SET ratings = ratings + ?, predictions = predictions + ?",
    )?
    .execute(params![ratings, predictions])
    .map(|_| ())
}

/// How many predictions the store holds (to advance the count by what a write added:
/// a re-run replaces rows).
pub(crate) fn predictions_count(conn: &Connection) -> duckdb::Result<i64> {
    conn.query_row("SELECT count(*) FROM predictions", [], |r| r.get(0))
}

/// Marks the summaries stale before SQL that may write ratings or predictions behind
/// the store's back; [`repair`] clears the mark once they agree again. A session that
/// dies in between leaves the mark, so no reader trusts the summaries until the next
/// repair (the next read-write open of the store).
pub fn mark_stale(conn: &Connection) -> duckdb::Result<()> {
    conn.execute_batch("UPDATE image_summary_state SET stale = true")
}

/// Recomputes every image's summaries, writes those that differ and clears the stale
/// mark (about a second per million images).
pub fn repair(conn: &Connection) -> duckdb::Result<()> {
    conn.execute_batch(include_str!("../../sql/store/summary_repair.sql"))
}

/// Whether the summaries can be trusted: not marked stale, and no rating or prediction
/// added or removed behind the store layer (a missing or altered state table counts as
/// stale). A rating or prediction changed in place by another tool is not seen: the
/// ratings are append-only, and cdwqc's own SQL sessions repair after writing.
pub fn fresh(conn: &Connection) -> bool {
    conn.prepare(include_str!("../../sql/store/summary_fresh.sql"))
        .and_then(|mut stmt| stmt.query_row([], |r| r.get::<_, Option<bool>>(0)))
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl Store {
    /// Whether the image browser may filter on the summaries.
    pub fn summaries_fresh(&self) -> bool {
        fresh(self.conn())
    }

    /// Repairs stale summaries (left by ad-hoc SQL that ended before its repair) when
    /// the store is open for writing.
    pub(super) fn repair_stale_summaries(&self) -> Result<(), StoreError> {
        if self.access() == Access::ReadOnly || self.summaries_fresh() {
            return Ok(());
        }
        repair(self.conn()).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dashboard::{ImageFilter, ImageListRow};
    use crate::store::ratings::NewRating;
    use crate::store::runs::PredictionRow;

    const IMAGES: i64 = 12;

    fn store_with_images() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        store
            .conn()
            .execute_batch(&format!(
                "INSERT INTO images (path, root, rel_path, status, subject, suffix, file_size, mtime_ns)
                 SELECT '/w/' || i, '/w', i::VARCHAR, 'ok', i::VARCHAR,
                        CASE WHEN i % 2 = 0 THEN 'T1w' ELSE 'FLAIR' END, 1, 0
                 FROM range(1, {} + 1) t(i)",
                IMAGES
            ))
            .expect("images");
        (dir, store)
    }

    fn rating(image_id: i64, rater: &str, usable: bool) -> NewRating {
        NewRating {
            image_id,
            rater: rater.into(),
            usable,
            code: "a".into(),
            source: "test".into(),
            ..NewRating::default()
        }
    }

    fn prediction(image_id: i64, label: Option<&str>) -> PredictionRow {
        PredictionRow {
            image_id,
            task: "usable".into(),
            label: label.map(str::to_string),
            probabilities: label.map(|_| vec![0.3, 0.7]),
            error: label.is_none().then(|| "unreadable".to_string()),
            domain_target: None,
            reason: None,
        }
    }

    /// Every filter the browser offers that reads ratings or predictions, each with
    /// the other filters off and with a sequence filter on top.
    fn filters() -> Vec<ImageFilter> {
        let mut out = Vec::new();
        for sequence in [None, Some("FLAIR".to_string())] {
            let base = ImageFilter {
                sequence,
                ..ImageFilter::default()
            };
            out.push(base.clone());
            for rated in [true, false] {
                out.push(ImageFilter {
                    rated: Some(rated),
                    ..base.clone()
                });
            }
            for label in ["usable", "reject"] {
                out.push(ImageFilter {
                    predicted: Some(label.into()),
                    ..base.clone()
                });
            }
            out.push(ImageFilter {
                disagreement: Some(true),
                ..base.clone()
            });
            out.push(ImageFilter {
                rated: Some(true),
                disagreement: Some(true),
                ..base.clone()
            });
        }
        out
    }

    /// The page (every row) and count of each filter from the summaries equal those
    /// computed from scratch over every rating and prediction; returns the rows of
    /// the unfiltered list as the summaries give them.
    #[track_caller]
    fn assert_exact(store: &Store, after: &str) -> Vec<ImageListRow> {
        assert!(store.summaries_fresh(), "{after}: summaries marked stale");
        let mut all = Vec::new();
        for filter in filters() {
            let fast = store
                .image_page_from_summaries(&filter, 0, 1000, None)
                .expect("from summaries");
            let slow = store
                .image_page_from_scratch(&filter, 0, 1000, None)
                .expect("from scratch");
            assert_eq!(fast, slow, "{after}: {filter:?}");
            if filter == ImageFilter::default() {
                all = fast.rows;
            }
        }
        all
    }

    fn summary_of(rows: &[ImageListRow], image_id: i64) -> (i64, String) {
        let row = rows.iter().find(|r| r.image_id == image_id).expect("row");
        (row.rated_by, row.predicted.clone())
    }

    #[test]
    fn every_store_write_keeps_the_summaries_exact() {
        let (_dir, mut store) = store_with_images();
        assert_exact(&store, "no rating yet");

        // Saves (the CLI's `rate`, the dashboard's rate-and-next), two raters.
        store
            .save_ratings(&[
                rating(1, "ann", true),
                rating(2, "ann", false),
                rating(3, "ann", true),
            ])
            .expect("save");
        let bob = store
            .save_ratings(&[rating(1, "bob", false)])
            .expect("save");
        let rows = assert_exact(&store, "saves");
        assert_eq!(summary_of(&rows, 1), (2, String::new()));

        // A rater's new rating of the same image supersedes the old one.
        let ann = store.save_ratings(&[rating(2, "ann", true)]).expect("save");
        assert_exact(&store, "supersede");

        // An import with new raters (`ratings import`), in one transaction.
        store
            .save_ratings_with_raters(
                &["cy".to_string()],
                &[
                    rating(4, "cy", false),
                    rating(5, "cy", true),
                    rating(1, "cy", true),
                ],
            )
            .expect("import");
        let rows = assert_exact(&store, "import");
        assert_eq!(summary_of(&rows, 1).0, 3);

        // Undo: the last rating is withdrawn, the one before is in force again;
        // undoing an image's only rating leaves it unrated.
        store
            .undo_rating("ann", ann[0], "test")
            .expect("undo")
            .expect("one");
        assert_exact(&store, "undo restoring an older rating");
        store
            .undo_rating("bob", bob[0], "test")
            .expect("undo")
            .expect("one");
        let rows = assert_exact(&store, "undo of the only rating");
        assert_eq!(summary_of(&rows, 1).0, 2);

        // Predictions (`infer`, `merge`, training's held-out predictions): a run, a
        // failed image (no label), a newer run that disagrees, a re-run that replaces.
        store
            .save_predictions(
                "run-a",
                &[
                    prediction(1, Some("reject")),
                    prediction(2, Some("usable")),
                    prediction(3, Some("reject")),
                    prediction(4, None),
                    prediction(6, Some("usable")),
                ],
            )
            .expect("predictions");
        let rows = assert_exact(&store, "first run");
        assert_eq!(summary_of(&rows, 1).1, "reject");
        assert_eq!(summary_of(&rows, 4).1, "");
        std::thread::sleep(std::time::Duration::from_millis(5));
        store
            .save_predictions(
                "run-b",
                &[prediction(3, Some("usable")), prediction(4, Some("reject"))],
            )
            .expect("predictions");
        let rows = assert_exact(&store, "newer run");
        assert_eq!(summary_of(&rows, 3).1, "usable");
        std::thread::sleep(std::time::Duration::from_millis(5));
        store
            .save_predictions(
                "run-a",
                &[prediction(1, Some("usable")), prediction(6, None)],
            )
            .expect("predictions");
        let rows = assert_exact(&store, "re-run replacing predictions");
        assert_eq!(summary_of(&rows, 6).1, "");

        // Ratings after predictions change the disagreement.
        store
            .save_ratings(&[rating(6, "ann", false), rating(3, "bob", false)])
            .expect("save");
        assert_exact(&store, "ratings after predictions");
    }

    #[test]
    fn sql_writes_are_repaired_and_a_stale_mark_is_never_trusted() {
        use crate::query::{Session, SessionOptions};
        let (dir, mut store) = store_with_images();
        store
            .save_ratings(&[rating(1, "ann", true), rating(2, "ann", false)])
            .expect("save");
        let path = dir.path().join("s.duckdb");
        drop(store);
        let session = Session::open(
            &path,
            &SessionOptions {
                write: true,
                allow_files: false,
            },
        )
        .expect("session");
        // Ratings, an undo and predictions written by hand, and summaries vandalized.
        session
            .run(
                "INSERT INTO ratings (image_id, rater, usable, protocol_version, source)
                 VALUES (3, 'zed', true, '1', 'sql'), (1, 'zed', false, '1', 'sql');
                 INSERT INTO ratings (image_id, rater, undoes, protocol_version, source)
                 SELECT 2, 'ann', rating_id, '1', 'sql' FROM ratings
                 WHERE image_id = 2 AND rater = 'ann';
                 INSERT INTO predictions (run_id, image_id, task, label)
                 VALUES ('hand', 5, 'usable', 'reject'), ('hand', 1, 'usable', 'reject');
                 UPDATE images SET raters_in_force = 7, usable_prediction = 'usable'
                 WHERE image_id = 9;",
            )
            .expect("sql");
        let rows = assert_exact(session.store(), "sql --write");
        assert_eq!(summary_of(&rows, 1), (2, "reject".to_string()));
        assert_eq!(summary_of(&rows, 2).0, 0);
        assert_eq!(summary_of(&rows, 9), (0, String::new()));
        drop(session);

        // A rating added behind the store layer (another tool) shows as a count that
        // differs; so does one removed.
        let mut store = Store::open(&path, Access::ReadWrite).expect("open");
        store
            .conn()
            .execute_batch(
                "INSERT INTO ratings (image_id, rater, usable, protocol_version, source)
                 VALUES (8, 'zed', true, '1', 'shell')",
            )
            .expect("behind the store's back");
        assert!(!store.summaries_fresh());
        // A store write afterwards refreshes its own images but does not bless the rest.
        store.save_ratings(&[rating(9, "ann", true)]).expect("save");
        assert!(!store.summaries_fresh());
        store.repair_stale_summaries().expect("repair");
        assert_exact(&store, "repaired after another tool's insert");
        store
            .conn()
            .execute_batch("DELETE FROM predictions WHERE image_id = 5")
            .expect("behind the store's back");
        assert!(!store.summaries_fresh());
        store.repair_stale_summaries().expect("repair");
        assert_exact(&store, "repaired after another tool's delete");

        // A session that died before its repair: the mark stays, the browser reads
        // the ratings themselves, and the next read-write open repairs. The stale
        // mark alone, without a count that differs, is enough.
        store
            .conn()
            .execute_batch(
                "UPDATE image_summary_state SET stale = true, ratings = ratings + 1;
                 INSERT INTO ratings (image_id, rater, usable, protocol_version, source)
                 VALUES (7, 'zed', true, '1', 'sql');",
            )
            .expect("crash");
        assert!(!store.summaries_fresh());
        let rated = ImageFilter {
            rated: Some(true),
            ..ImageFilter::default()
        };
        let page = store.image_page(&rated, 0, 100, None).expect("page");
        assert!(page.rows.iter().any(|r| r.image_id == 7), "{page:?}");
        drop(store);
        let ro = Store::open(&path, Access::ReadOnly).expect("read-only");
        assert!(!ro.summaries_fresh(), "a read-only open repairs nothing");
        drop(ro);
        let store = Store::open(&path, Access::ReadWrite).expect("open");
        assert_exact(&store, "reopened after a crash");
    }

    #[test]
    fn the_migration_backfills_an_older_store() {
        use crate::store::migrations::MIGRATIONS;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.duckdb");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, \
                 name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)",
            )
            .expect("table");
            for m in MIGRATIONS.iter().filter(|m| m.version < 11) {
                conn.execute_batch(m.sql).expect("older migration");
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    params![m.version, m.name],
                )
                .expect("version");
            }
            conn.execute_batch(
                "INSERT INTO images (path, root, rel_path, status, suffix, file_size, mtime_ns)
                 SELECT '/w/' || i, '/w', i::VARCHAR, 'ok', 'FLAIR', 1, 0 FROM range(1, 6) t(i);
                 INSERT INTO ratings (image_id, rater, usable, protocol_version, source)
                 VALUES (1, 'a', true, '1', 't'), (1, 'b', false, '1', 't'),
                        (2, 'a', false, '1', 't'), (3, 'a', true, '1', 't');
                 INSERT INTO ratings (image_id, rater, undoes, protocol_version, source)
                 VALUES (3, 'a', 4, '1', 't');
                 INSERT INTO predictions (run_id, image_id, task, label)
                 VALUES ('r', 1, 'usable', 'reject'), ('r', 2, 'usable', 'usable'),
                        ('r', 4, 'quality', 'good');",
            )
            .expect("rows");
        }
        let store = Store::open(&path, Access::ReadWrite).expect("migrates");
        let rows = assert_exact(&store, "migration 011");
        assert_eq!(summary_of(&rows, 1), (2, "reject".to_string()));
        assert_eq!(summary_of(&rows, 3), (0, String::new()));
        assert_eq!(summary_of(&rows, 4), (0, String::new()));
    }
}
