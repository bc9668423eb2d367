//! Finding stored images from the keys people hold in rating files: a path, BIDS
//! entities, or a file stem (the authors' notebook `img_id`).

use std::collections::HashMap;

use super::{Store, StoreError};

/// How a rating file names an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// Absolute, or relative to an import root.
    Path(String),
    /// BIDS entities; `None` fields are not compared.
    Entities {
        subject: String,
        session: Option<String>,
        acq: Option<String>,
        run: Option<String>,
        suffix: Option<String>,
    },
    /// File name without `.nii` / `.nii.gz`.
    Stem(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no image matches {0}")]
    NotFound(String),
    #[error("{what} matches {n} images; give more of its BIDS entities or its path")]
    Ambiguous { what: String, n: usize },
}

#[derive(Debug, Clone)]
struct Entry {
    image_id: i64,
    subject: Option<String>,
    session: Option<String>,
    acq: Option<String>,
    run: Option<String>,
    suffix: Option<String>,
}

/// Every stored image's keys, loaded once for matching many rows.
#[derive(Debug, Default)]
pub struct ImageIndex {
    by_path: HashMap<String, Vec<i64>>,
    /// Paths relative to the import root only.
    by_relative: HashMap<String, Vec<i64>>,
    by_stem: HashMap<String, Vec<i64>>,
    by_subject: HashMap<String, Vec<Entry>>,
}

fn strip(prefix: &str, value: &str) -> String {
    value.strip_prefix(prefix).unwrap_or(value).to_string()
}

impl ImageIndex {
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let mut stmt = store
            .conn()
            .prepare(
                "SELECT image_id, path, rel_path, subject, session, acq, run, suffix \
                 FROM images WHERE status <> 'missing'",
            )
            .map_err(|e| store.err(e))?;
        let mut index = Self::default();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    Entry {
                        image_id: r.get(0)?,
                        subject: r.get(3)?,
                        session: r.get(4)?,
                        acq: r.get(5)?,
                        run: r.get(6)?,
                        suffix: r.get(7)?,
                    },
                ))
            })
            .map_err(|e| store.err(e))?;
        for row in rows {
            let (id, path, rel, entry) = row.map_err(|e| store.err(e))?;
            index.by_path.entry(path).or_default().push(id);
            let stem = crate::imaging::bids::stem(std::path::Path::new(&rel));
            index.by_relative.entry(rel.clone()).or_default().push(id);
            index.by_path.entry(rel).or_default().push(id);
            index.by_stem.entry(stem).or_default().push(id);
            if let Some(s) = entry.subject.clone() {
                index.by_subject.entry(s).or_default().push(entry);
            }
        }
        Ok(index)
    }

    /// The one image a reference names.
    pub fn find(&self, key: &ImageRef) -> Result<i64, LookupError> {
        let one = |ids: Option<&Vec<i64>>, what: String| -> Result<i64, LookupError> {
            let mut ids: Vec<i64> = ids.cloned().unwrap_or_default();
            ids.sort_unstable();
            ids.dedup();
            match ids.as_slice() {
                [id] => Ok(*id),
                [] => Err(LookupError::NotFound(what)),
                many => Err(LookupError::Ambiguous {
                    what,
                    n: many.len(),
                }),
            }
        };
        match key {
            ImageRef::Path(p) => {
                let p = p.trim_start_matches("./");
                if self.by_path.contains_key(p) || !p.contains('/') {
                    return one(self.by_path.get(p), format!("path {p}"));
                }
                // The same dataset under another mount point (a copy rated on another
                // machine): the longest end of the path that is an image's path
                // relative to its import root, whole folders only. Never the file name
                // alone: `sub-09/func/sub-02_T1w.nii.gz` does not name sub-02's T1w.
                let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
                for start in 1..parts.len().saturating_sub(1) {
                    let end = parts[start..].join("/");
                    if let Some(ids) = self.by_relative.get(&end) {
                        return one(Some(ids), format!("path {p} (as {end})"));
                    }
                }
                Err(LookupError::NotFound(format!("path {p}")))
            }
            ImageRef::Stem(s) => one(self.by_stem.get(s.as_str()), format!("img_id {s}")),
            ImageRef::Entities {
                subject,
                session,
                acq,
                run,
                suffix,
            } => {
                let subject = strip("sub-", subject);
                let session = session.as_deref().map(|s| strip("ses-", s));
                let acq = acq.as_deref().map(|s| strip("acq-", s));
                let run = run.as_deref().map(|s| strip("run-", s));
                let same = |want: &Option<String>, have: &Option<String>| {
                    want.as_ref()
                        .is_none_or(|w| have.as_deref() == Some(w.as_str()))
                };
                // Runs compare as numbers when both are numbers ("1" names "01").
                let same_run = |have: &Option<String>| match (&run, have) {
                    (None, _) => true,
                    (Some(w), Some(h)) => match (w.parse::<u32>(), h.parse::<u32>()) {
                        (Ok(a), Ok(b)) => a == b,
                        _ => w == h,
                    },
                    (Some(_), None) => false,
                };
                let candidates: Vec<&Entry> = self
                    .by_subject
                    .get(&subject)
                    .map(|entries| {
                        entries
                            .iter()
                            .filter(|e| {
                                same(&session, &e.session)
                                    && same(&acq, &e.acq)
                                    && same_run(&e.run)
                                    && same(suffix, &e.suffix)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                // A full BIDS name such as `sub-01_FLAIR` also matches
                // `sub-01_acq-3D_FLAIR`, since unnamed entities are not compared; the one
                // image that has no entity beyond those named is the one the name spells.
                let exact: Vec<i64> = candidates
                    .iter()
                    .filter(|e| {
                        (session.is_some() || e.session.is_none())
                            && (acq.is_some() || e.acq.is_none())
                            && (run.is_some() || e.run.is_none())
                            && (suffix.is_some() || e.suffix.is_none())
                    })
                    .map(|e| e.image_id)
                    .collect();
                let ids: Vec<i64> = if candidates.len() > 1 && exact.len() == 1 {
                    exact
                } else {
                    candidates.iter().map(|e| e.image_id).collect()
                };
                let mut what = format!("sub-{subject}");
                for (k, v) in [("ses", &session), ("acq", &acq), ("run", &run)] {
                    if let Some(v) = v {
                        what.push_str(&format!("_{k}-{v}"));
                    }
                }
                if let Some(s) = suffix {
                    what.push_str(&format!("_{s}"));
                }
                one(Some(&ids), what)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_path_entities_and_stem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        store
            .conn()
            .execute_batch(
                "INSERT INTO images (path, root, rel_path, status, subject, session, run, suffix, file_size, mtime_ns) VALUES
                 ('/w/sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz', '/w', 'sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz', 'ok', '01', '1', NULL, 'FLAIR', 1, 1),
                 ('/w/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz', '/w', 'sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz', 'ok', '01', '1', NULL, 'T1w', 1, 1),
                 ('/w/sub-02/anat/sub-02_run-01_T1w.nii', '/w', 'sub-02/anat/sub-02_run-01_T1w.nii', 'ok', '02', NULL, '01', 'T1w', 1, 1),
                 ('/w/gone.nii', '/w', 'gone.nii', 'missing', NULL, NULL, NULL, NULL, 1, 1),
                 ('/w/sub-04/anat/sub-04_run-1_T1w.nii', '/w', 'sub-04/anat/sub-04_run-1_T1w.nii', 'ok', '04', NULL, '1', 'T1w', 1, 1),
                 ('/w/sub-04/anat/sub-04_run-2_T1w.nii', '/w', 'sub-04/anat/sub-04_run-2_T1w.nii', 'ok', '04', NULL, '2', 'T1w', 1, 1);
                 INSERT INTO images (path, root, rel_path, status, subject, acq, suffix, file_size, mtime_ns) VALUES
                 ('/w/sub-03/anat/sub-03_FLAIR.nii', '/w', 'sub-03/anat/sub-03_FLAIR.nii', 'ok', '03', NULL, 'FLAIR', 1, 1),
                 ('/w/sub-03/anat/sub-03_acq-3D_FLAIR.nii', '/w', 'sub-03/anat/sub-03_acq-3D_FLAIR.nii', 'ok', '03', '3D', 'FLAIR', 1, 1);",
            )
            .expect("rows");
        let index = ImageIndex::load(&store).expect("index");
        let id_of = |rel: &str| index.find(&ImageRef::Path(rel.into())).expect("by path");
        let plain_flair = id_of("sub-03/anat/sub-03_FLAIR.nii");
        let acquired_flair = id_of("sub-03/anat/sub-03_acq-3D_FLAIR.nii");
        let flair = index
            .find(&ImageRef::Path(
                "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz".into(),
            ))
            .expect("by relative path");
        assert_eq!(
            index.find(&ImageRef::Path(
                "/w/sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz".into()
            )),
            Ok(flair)
        );
        assert_eq!(
            index.find(&ImageRef::Stem("sub-01_ses-1_FLAIR".into())),
            Ok(flair)
        );
        // The dataset under another mount point; never by the file name alone.
        assert_eq!(
            index.find(&ImageRef::Path(
                "/mnt/copy/sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz".into()
            )),
            Ok(flair)
        );
        for elsewhere in [
            "sub-09/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz",
            "/other/sub-01_ses-1_FLAIR.nii.gz",
        ] {
            assert!(
                matches!(
                    index.find(&ImageRef::Path(elsewhere.into())),
                    Err(LookupError::NotFound(_))
                ),
                "{elsewhere}"
            );
        }
        let by_entities = ImageRef::Entities {
            subject: "sub-01".into(),
            session: Some("ses-1".into()),
            acq: None,
            run: None,
            suffix: Some("FLAIR".into()),
        };
        assert_eq!(index.find(&by_entities), Ok(flair));
        let ambiguous = ImageRef::Entities {
            subject: "01".into(),
            session: None,
            acq: None,
            run: None,
            suffix: None,
        };
        assert!(matches!(
            index.find(&ambiguous),
            Err(LookupError::Ambiguous { n: 2, .. })
        ));
        let plain_and_acquired = ImageRef::Entities {
            subject: "03".into(),
            session: None,
            acq: None,
            run: None,
            suffix: Some("FLAIR".into()),
        };
        assert_eq!(index.find(&plain_and_acquired), Ok(plain_flair));
        let acquired = ImageRef::Entities {
            subject: "03".into(),
            session: None,
            acq: Some("3D".into()),
            run: None,
            suffix: Some("FLAIR".into()),
        };
        assert_eq!(index.find(&acquired), Ok(acquired_flair));
        let either_run = ImageRef::Entities {
            subject: "04".into(),
            session: None,
            acq: None,
            run: None,
            suffix: Some("T1w".into()),
        };
        assert!(
            matches!(
                index.find(&either_run),
                Err(LookupError::Ambiguous { n: 2, .. })
            ),
            "two runs and no image without a run: still ambiguous"
        );
        let run = ImageRef::Entities {
            subject: "02".into(),
            session: None,
            acq: None,
            run: Some("1".into()),
            suffix: Some("T1w".into()),
        };
        assert!(index.find(&run).is_ok());
        assert!(matches!(
            index.find(&ImageRef::Path("gone.nii".into())),
            Err(LookupError::NotFound(_))
        ));
    }
}

/// How an image is named in exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageKeyRow {
    pub rel_path: String,
    pub subject: Option<String>,
    pub session: Option<String>,
    pub acq: Option<String>,
    pub run: Option<String>,
    pub suffix: Option<String>,
}

impl Store {
    /// Every image's export key, by image id.
    pub fn image_keys(&self) -> Result<HashMap<i64, ImageKeyRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT image_id, rel_path, subject, session, acq, run, suffix FROM images")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    ImageKeyRow {
                        rel_path: r.get(1)?,
                        subject: r.get(2)?,
                        session: r.get(3)?,
                        acq: r.get(4)?,
                        run: r.get(5)?,
                        suffix: r.get(6)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}
