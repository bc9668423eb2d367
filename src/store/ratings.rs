//! The `ratings` history: appending saves and undos, reading what is in force.
//! Nothing here updates or deletes a rating row.

use duckdb::params;
use serde::Serialize;

use super::{Store, StoreError};

/// The version of the QC protocol written with every rating.
pub const PROTOCOL_VERSION: &str = "1";

/// The ratings rating files saved before: how many per source and rater (and image,
/// for a source that names no line), and when the first was saved.
#[derive(Debug, Clone, Default)]
pub struct SavedFromSource {
    pub counts: std::collections::HashMap<(String, String, Option<i64>), usize>,
    pub total: usize,
    /// Each rater's first save, `YYYY-MM-DD HH:MM:SS`: per rater, so that a rater is
    /// never told when another rater saved ratings from the same bytes.
    pub first_saved: std::collections::HashMap<String, String>,
}

/// One save of one rating, as plain fields (the protocol types convert into this).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewRating {
    pub image_id: i64,
    pub rater: String,
    pub usable: bool,
    pub reject_reason: Option<String>,
    pub gado: bool,
    pub motion: u8,
    pub contrast: u8,
    pub noise: u8,
    /// A quality-only rating (MRIQC-style tables): gado and grades are unknown and
    /// stored as NULL; `quality` carries the rater's class.
    pub quality_only: bool,
    /// good / medium / bad; derived from the grades when `None` on a usable rating.
    pub quality: Option<String>,
    /// The notebook code, e.g. `kaz` (empty for quality-only ratings).
    pub code: String,
    pub comment: Option<String>,
    pub confidence: Option<u8>,
    pub time_ms: Option<i64>,
    pub review_later: bool,
    /// Where the rating came from: `tui`, `line`, `import:<sha256 of the file>:<line>`
    /// (earlier builds: `import:<sha256>`).
    pub source: String,
    /// When the rater rated (RFC 3339); now when `None`.
    pub rated_at: Option<String>,
}

/// A saved rating's values as the store holds them: what a file's row is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedValues {
    pub usable: Option<bool>,
    pub reject_reason: Option<String>,
    pub gado: Option<bool>,
    pub motion: Option<u8>,
    pub contrast: Option<u8>,
    pub noise: Option<u8>,
    pub quality: Option<String>,
    pub code: Option<String>,
    pub comment: Option<String>,
    pub confidence: Option<u8>,
    pub time_ms: Option<i64>,
}

impl NewRating {
    /// The values this rating is saved with (as `apply_staged_ratings.sql` stores them).
    pub fn saved_values(&self) -> SavedValues {
        let graded = !self.quality_only;
        SavedValues {
            usable: Some(self.usable),
            reject_reason: self.reject_reason.clone(),
            gado: graded.then_some(self.gado),
            motion: graded.then_some(self.motion),
            contrast: graded.then_some(self.contrast),
            noise: graded.then_some(self.noise),
            quality: quality_of(self),
            code: graded.then(|| self.code.clone()),
            comment: self.comment.clone(),
            confidence: self.confidence,
            time_ms: self.time_ms,
        }
    }
}

/// The quality class stored with a rating: given, or the worst grade of a usable one.
fn quality_of(r: &NewRating) -> Option<String> {
    if !r.usable {
        return None;
    }
    if let Some(q) = &r.quality {
        return Some(q.clone());
    }
    Some(
        match r.motion.max(r.contrast).max(r.noise) {
            0 => "good",
            1 => "medium",
            _ => "bad",
        }
        .to_string(),
    )
}

impl Store {
    /// Appends ratings in one transaction (all or none); returns their ids. When this
    /// returns, the ratings are durable.
    pub fn save_ratings(&mut self, ratings: &[NewRating]) -> Result<Vec<i64>, StoreError> {
        self.save_ratings_with_raters(&[], ratings)
    }

    /// Adds the raters `new_raters` (role `rater`; existing ones are left as they are)
    /// and appends `ratings`, all in one transaction: when a rating is refused, no
    /// rater is added either.
    pub fn save_ratings_with_raters(
        &mut self,
        new_raters: &[String],
        ratings: &[NewRating],
    ) -> Result<Vec<i64>, StoreError> {
        self.save_ratings_from_file(new_raters, ratings, None)
    }

    /// [`Self::save_ratings_with_raters`], recording the rating file they came from
    /// (its source `import:<sha256>` and its name) in the same transaction.
    pub fn save_ratings_from_file(
        &mut self,
        new_raters: &[String],
        ratings: &[NewRating],
        file: Option<(&str, &str)>,
    ) -> Result<Vec<i64>, StoreError> {
        for name in new_raters {
            super::raters::validate_name(name).map_err(|message| StoreError::Invalid {
                path: self.path().to_path_buf(),
                message,
            })?;
            self.check_new_rater_case(name)?;
        }
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        for name in new_raters {
            tx.execute(
                include_str!("../../sql/store/add_rater_if_new.sql"),
                params![name],
            )
            .map_err(db)?;
        }
        if let Some((source, name)) = file {
            tx.execute(
                include_str!("../../sql/store/record_rating_file.sql"),
                params![source, name],
            )
            .map_err(db)?;
        }
        // One statement for the whole save: a row-at-a-time INSERT cost about a
        // millisecond per rating inside DuckDB (20,000 rows of one file: 27 s). The ids
        // are drawn first and given in save order, so the rating in force is the same.
        let mut ids: Vec<i64> = {
            let mut stmt = tx
                .prepare(include_str!("../../sql/store/next_rating_ids.sql"))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![ratings.len() as i64], |row| row.get(0))
                .map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        ids.sort_unstable();
        tx.execute_batch(include_str!("../../sql/store/stage_ratings_create.sql"))
            .map_err(db)?;
        {
            let mut appender = tx
                .appender_to_catalog_and_db("stage_ratings", "temp", "main")
                .map_err(db)?;
            for (r, id) in ratings.iter().zip(&ids) {
                // The values compared with a file's rows are the ones stored, by
                // construction.
                let v = r.saved_values();
                appender
                    .append_row(params![
                        id,
                        r.image_id,
                        r.rater,
                        v.usable,
                        v.reject_reason,
                        v.gado,
                        v.motion,
                        v.contrast,
                        v.noise,
                        v.quality,
                        v.code,
                        v.comment,
                        v.confidence,
                        v.time_ms,
                        r.review_later,
                        None::<i64>,
                        PROTOCOL_VERSION,
                        r.source,
                        r.rated_at,
                    ])
                    .map_err(db)?;
            }
            // Explicitly, so that a value DuckDB refuses fails here and not on drop.
            appender.flush().map_err(db)?;
        }
        tx.execute_batch(include_str!("../../sql/store/apply_staged_ratings.sql"))
            .map_err(db)?;
        super::summaries::refresh_ratings(&tx, ratings.iter().map(|r| r.image_id)).map_err(db)?;
        super::summaries::advance_counts(&tx, ratings.len() as i64, 0).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(ids)
    }

    /// Withdraws one save, `rating_id`, by appending an undo row, when it is still the
    /// rater's rating in force for its image; the rating in force before it is in force
    /// again. Returns the save's image, or `None` when a later save or import has
    /// overruled it (nothing is withdrawn then). The dashboard and `cdwqc rate` undo
    /// the saves of their own session only, newest first: an undo never reaches back to
    /// ratings the rater did not just make.
    pub fn undo_rating(
        &mut self,
        rater: &str,
        rating_id: i64,
        source: &str,
    ) -> Result<Option<i64>, StoreError> {
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        let image_id: Option<i64> = {
            let mut stmt = tx
                .prepare(include_str!("../../sql/store/rating_in_force.sql"))
                .map_err(db)?;
            let mut rows = stmt.query(params![rater, rating_id]).map_err(db)?;
            match rows.next().map_err(db)? {
                Some(row) => Some(row.get(0).map_err(db)?),
                None => None,
            }
        };
        let Some(image_id) = image_id else {
            return Ok(None);
        };
        tx.execute(
            include_str!("../../sql/store/insert_undo.sql"),
            params![image_id, rater, rating_id, PROTOCOL_VERSION, source],
        )
        .map_err(db)?;
        super::summaries::refresh_ratings(&tx, [image_id]).map_err(db)?;
        super::summaries::advance_counts(&tx, 1, 0).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Some(image_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        (dir, store)
    }

    fn rating(image_id: i64, rater: &str, motion: u8) -> NewRating {
        NewRating {
            image_id,
            rater: rater.into(),
            usable: true,
            motion,
            code: "a".repeat(motion as usize),
            source: "test".into(),
            ..NewRating::default()
        }
    }

    fn in_force(store: &Store) -> Vec<(i64, String, i64)> {
        let mut stmt = store
            .conn()
            .prepare("SELECT image_id, rater, motion FROM ratings_latest ORDER BY image_id, rater")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn latest_rating_wins_and_undo_restores_the_previous_one() {
        let (_dir, mut store) = store();
        let first = store
            .save_ratings(&[rating(1, "ann", 0), rating(1, "bob", 1)])
            .expect("save");
        let second = store.save_ratings(&[rating(1, "ann", 2)]).expect("save");
        assert_eq!(
            in_force(&store),
            vec![(1, "ann".into(), 2), (1, "bob".into(), 1)]
        );
        // Only a save in force is withdrawn: ann's first is overruled by her second.
        assert_eq!(
            store.undo_rating("ann", first[0], "test").expect("undo"),
            None
        );
        // Nor is another rater's save withdrawn under ann's name.
        assert_eq!(
            store.undo_rating("ann", first[1], "test").expect("undo"),
            None
        );
        let undone = store.undo_rating("ann", second[0], "test").expect("undo");
        assert_eq!(undone, Some(1));
        assert_eq!(
            in_force(&store),
            vec![(1, "ann".into(), 0), (1, "bob".into(), 1)]
        );
        assert_eq!(
            store.undo_rating("ann", second[0], "test").expect("undo"),
            None
        );
        store.undo_rating("ann", first[0], "test").expect("undo");
        assert_eq!(in_force(&store), vec![(1, "bob".into(), 1)]);
        // History keeps every save and undo.
        let n: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM ratings", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 5);
    }

    #[test]
    fn save_order_wins_over_the_clock() {
        let (_dir, mut store) = store();
        // A save made while the clock was a century ahead, and one dated in the past.
        store
            .conn()
            .execute_batch(
                "INSERT INTO ratings (image_id, rater, usable, gado, motion, contrast, noise,
                                      protocol_version, source, rated_at, saved_at)
                 VALUES (1, 'ann', true, false, 2, 0, 0, '1', 'test',
                         '2126-01-01 00:00:00+00', '2126-01-01 00:00:00+00')",
            )
            .expect("a save under a clock that later jumped back");
        let mut past = rating(1, "ann", 1);
        past.rated_at = Some("2001-01-01T00:00:00Z".into());
        let past = store.save_ratings(&[past]).expect("save");
        assert_eq!(in_force(&store), vec![(1, "ann".into(), 1)]);
        // The save in force is the last one, not the one with the latest time.
        store.undo_rating("ann", past[0], "test").expect("undo");
        assert_eq!(in_force(&store), vec![(1, "ann".into(), 2)]);
    }

    #[test]
    fn raters_of_a_failed_batch_are_not_added() {
        let (_dir, mut store) = store();
        let mut bad = rating(2, "new_rater", 1);
        bad.confidence = Some(9);
        let names = ["new_rater".to_string(), "other".to_string()];
        assert!(
            store
                .save_ratings_with_raters(&names, &[rating(1, "new_rater", 1), bad])
                .is_err()
        );
        assert!(store.raters().expect("raters").is_empty());
        store
            .save_ratings_with_raters(&names, &[rating(1, "new_rater", 1)])
            .expect("save");
        let raters: Vec<String> = store
            .raters()
            .expect("raters")
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(raters, names);
    }

    #[test]
    fn a_failed_batch_saves_nothing() {
        let (_dir, mut store) = store();
        let mut bad = rating(2, "ann", 1);
        bad.confidence = Some(9); // violates the 1-5 check
        assert!(store.save_ratings(&[rating(1, "ann", 1), bad]).is_err());
        assert!(in_force(&store).is_empty());
    }
}

/// A rating in force, as stored (NULL grades for quality-only ratings).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRating {
    pub image_id: i64,
    pub rater: String,
    pub usable: bool,
    pub reject_reason: Option<String>,
    pub gado: Option<bool>,
    pub motion: Option<u8>,
    pub contrast: Option<u8>,
    pub noise: Option<u8>,
    pub quality: Option<String>,
}

impl Store {
    /// Every rating in force (the latest per image and rater, undos applied).
    pub fn ratings_in_force(&self) -> Result<Vec<StoredRating>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT image_id, rater, usable, reject_reason, gado, motion, contrast, noise, quality \
                 FROM ratings_latest WHERE usable IS NOT NULL ORDER BY image_id, rater",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredRating {
                    image_id: r.get(0)?,
                    rater: r.get(1)?,
                    usable: r.get(2)?,
                    reject_reason: r.get(3)?,
                    gado: r.get(4)?,
                    motion: r.get(5)?,
                    contrast: r.get(6)?,
                    noise: r.get(7)?,
                    quality: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Names of the raters whose role is adjudicator.
    pub fn adjudicators(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT name FROM raters WHERE role = 'adjudicator'")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The source of the version of the rating file at `file_name` imported last.
    pub fn last_version_of_file(&self, file_name: &str) -> Result<Option<String>, StoreError> {
        use duckdb::OptionalExt;
        self.conn()
            .query_row(
                include_str!("../../sql/store/last_version_of_file.sql"),
                params![file_name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// For each (rater, image), the values of the latest rating saved from a version
    /// of the rating file at `file_name` (see `sql/store/latest_from_file_name.sql`).
    pub fn latest_from_file_name(
        &self,
        file_name: &str,
    ) -> Result<std::collections::HashMap<(String, i64), SavedValues>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/latest_from_file_name.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![file_name], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, i64>(1)?),
                    SavedValues {
                        usable: r.get(2)?,
                        reject_reason: r.get(3)?,
                        gado: r.get(4)?,
                        motion: r.get(5)?,
                        contrast: r.get(6)?,
                        noise: r.get(7)?,
                        quality: r.get(8)?,
                        code: r.get(9)?,
                        comment: r.get(10)?,
                        confidence: r.get(11)?,
                        time_ms: r.get(12)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// What ratings from these files (`import:<sha256>` each) were saved, if any: per
    /// source naming a line, and rater; per source naming the file only (an earlier
    /// build's), rater and image.
    pub fn ratings_from_sources(&self, files: &[&str]) -> Result<SavedFromSource, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/ratings_from_source.sql"))
            .map_err(|e| self.err(e))?;
        let mut saved = SavedFromSource::default();
        for file in files {
            let rows = stmt
                .query_map(params![file, file], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (source, rater, image_id, n, first) = row.map_err(|e| self.err(e))?;
                let n = usize::try_from(n).unwrap_or(0);
                saved.total += n;
                // A source naming a line is counted per rater, and per rater and image
                // too (a widget file's one row is matched with its image); one naming
                // the file only (an earlier build's), per rater and image.
                if source != *file {
                    *saved
                        .counts
                        .entry((source.clone(), rater.clone(), None))
                        .or_default() += n;
                }
                if let Some(first) = first {
                    let earliest = saved.first_saved.entry(rater.clone()).or_default();
                    if earliest.is_empty() || first < *earliest {
                        *earliest = first;
                    }
                }
                *saved
                    .counts
                    .entry((source, rater, Some(image_id)))
                    .or_default() += n;
            }
        }
        Ok(saved)
    }
}
