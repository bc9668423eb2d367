//! The `raters` table: who may rate, and who adjudicates ties.

use duckdb::params;
use serde::Serialize;

use super::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Rater,
    /// Breaks ties in the consensus.
    Adjudicator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rater => "rater",
            Self::Adjudicator => "adjudicator",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaterRow {
    pub name: String,
    pub role: String,
    pub images_rated: i64,
    pub last_saved: Option<String>,
}

/// Rater names are used in file names and SQL; keep them plain.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("rater name {name:?} must have 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "rater name {name:?} may only hold letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

impl Store {
    /// Refuses `name` as a new rater when a rater of the same name but for case exists
    /// (`rAter1` beside `rater1`): commands that add raters on the way (queues, rating)
    /// would otherwise split one person in two. `cdwqc raters add` adds such a name on
    /// purpose.
    pub fn check_new_rater_case(&self, name: &str) -> Result<(), StoreError> {
        use duckdb::OptionalExt;
        let existing: Option<String> = self
            .conn()
            .query_row(
                include_str!("../../sql/store/rater_differing_in_case.sql"),
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match existing {
            Some(existing) => Err(StoreError::Invalid {
                path: self.path().to_path_buf(),
                message: format!(
                    "rater {name} differs from the existing rater {existing} in case only: \
                     use {existing}, or add {name} first with `cdwqc raters add {name}`"
                ),
            }),
            None => Ok(()),
        }
    }

    /// Adds a rater, or changes the role of an existing one. Returns true when new.
    pub fn add_rater(&self, name: &str, role: Role) -> Result<bool, StoreError> {
        validate_name(name).map_err(|message| StoreError::Invalid {
            path: self.path().to_path_buf(),
            message,
        })?;
        let existed: i64 = self
            .conn()
            .query_row(
                "SELECT count(*) FROM raters WHERE name = ?",
                params![name],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        self.conn()
            .execute(
                "INSERT INTO raters (name, role) VALUES (?, ?) \
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role",
                params![name, role.as_str()],
            )
            .map_err(|e| self.err(e))?;
        Ok(existed == 0)
    }

    pub fn raters(&self) -> Result<Vec<RaterRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT rater, role, images_rated, strftime(last_saved, '%Y-%m-%d %H:%M:%S') \
                 FROM rater_progress ORDER BY rater",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RaterRow {
                    name: r.get(0)?,
                    role: r.get(1)?,
                    images_rated: r.get(2)?,
                    last_saved: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_and_change_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        assert!(store.add_rater("ann", Role::Rater).expect("add"));
        assert!(!store.add_rater("ann", Role::Adjudicator).expect("re-add"));
        assert!(store.add_rater("bob", Role::Rater).expect("add"));
        let raters = store.raters().expect("list");
        assert_eq!(raters.len(), 2);
        assert_eq!(
            (raters[0].name.as_str(), raters[0].role.as_str()),
            ("ann", "adjudicator")
        );
        assert_eq!(raters[1].images_rated, 0);
        assert!(store.add_rater("bad name", Role::Rater).is_err());
        assert!(store.add_rater("", Role::Rater).is_err());
    }
}
