//! Schema migrations: numbered SQL files in `sql/migrations/`, embedded in the binary,
//! applied in order, each inside its own transaction with its `schema_migrations` row.

use super::{Access, Store, StoreError};

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. A new file in `sql/migrations/` must be added here
/// (a test checks that the folder and this list agree).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../sql/migrations/001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "rating_views",
        sql: include_str!("../../sql/migrations/002_rating_views.sql"),
    },
    Migration {
        version: 3,
        name: "queues",
        sql: include_str!("../../sql/migrations/003_queues.sql"),
    },
    Migration {
        version: 4,
        name: "image_scanners",
        sql: include_str!("../../sql/migrations/004_image_scanners.sql"),
    },
    Migration {
        version: 5,
        name: "save_order_and_run_sequences",
        sql: include_str!("../../sql/migrations/005_save_order_and_run_sequences.sql"),
    },
    Migration {
        version: 7,
        name: "iqms",
        sql: include_str!("../../sql/migrations/007_iqms.sql"),
    },
    Migration {
        version: 8,
        name: "iqm_outliers",
        sql: include_str!("../../sql/migrations/008_iqm_outliers.sql"),
    },
    Migration {
        version: 10,
        name: "queue_reasons",
        sql: include_str!("../../sql/migrations/010_queue_reasons.sql"),
    },
    Migration {
        version: 11,
        name: "image_summaries",
        sql: include_str!("../../sql/migrations/011_image_summaries.sql"),
    },
    Migration {
        version: 12,
        name: "prediction_domain",
        sql: include_str!("../../sql/migrations/012_prediction_domain.sql"),
    },
    Migration {
        version: 13,
        name: "prediction_reason",
        sql: include_str!("../../sql/migrations/013_prediction_reason.sql"),
    },
    Migration {
        version: 14,
        name: "rating_files",
        sql: include_str!("../../sql/migrations/014_rating_files.sql"),
    },
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
)";

/// The store's schema version (0 for an empty database).
pub fn current_version(store: &Store) -> Result<i64, StoreError> {
    let exists: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_name = 'schema_migrations' AND table_schema = 'main'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| store.err(e))?;
    if exists == 0 {
        return Ok(0);
    }
    store
        .conn()
        .query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(|e| store.err(e))
}

/// Applies pending migrations (read-write) or checks that none is pending (read-only).
pub(super) fn bring_up_to_date(store: &Store) -> Result<(), StoreError> {
    let found = current_version(store)?;
    let known = latest_version();
    if found > known {
        return Err(StoreError::NewerSchema {
            path: store.path().to_path_buf(),
            found,
            known,
        });
    }
    if found == known {
        return Ok(());
    }
    if store.access() == Access::ReadOnly {
        return Err(StoreError::NeedsMigration {
            path: store.path().to_path_buf(),
            found,
            known,
        });
    }
    store
        .conn()
        .execute_batch(CREATE_TABLE)
        .map_err(|e| store.err(e))?;
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        apply(store, m)?;
    }
    Ok(())
}

fn apply(store: &Store, m: &Migration) -> Result<(), StoreError> {
    let fail = |source| StoreError::Migration {
        path: store.path().to_path_buf(),
        version: m.version,
        name: m.name,
        source: Box::new(source),
    };
    let conn = store.conn();
    conn.execute_batch("BEGIN TRANSACTION").map_err(fail)?;
    let result = conn.execute_batch(m.sql).and_then(|_| {
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            duckdb::params![m.version, m.name],
        )
    });
    match result {
        Ok(_) => conn.execute_batch("COMMIT").map_err(fail),
        Err(e) => {
            // The error to report is the migration's, not a failed rollback's.
            let _ = conn.execute_batch("ROLLBACK");
            Err(fail(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_registered_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("sql/migrations exists")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let registered: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:03}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, registered);
        // Numbers are reserved per feature branch, so the list may have gaps until
        // every branch is merged; it must still be in order.
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
    }

    #[test]
    fn newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.duckdb");
        {
            let s = Store::create(&path).expect("create");
            s.conn()
                .execute_batch(
                    "INSERT INTO schema_migrations (version, name) VALUES (999, 'future')",
                )
                .expect("insert");
        }
        let err = Store::open(&path, Access::ReadWrite).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade cdwqc"));
    }

    #[test]
    fn older_schema_is_migrated_on_write_and_refused_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.duckdb");
        {
            let conn = duckdb::Connection::open(&path).expect("open");
            conn.execute_batch(CREATE_TABLE).expect("table");
        }
        let err = Store::open(&path, Access::ReadOnly).unwrap_err();
        assert!(
            matches!(err, StoreError::NeedsMigration { found: 0, .. }),
            "{err}"
        );
        let s = Store::open(&path, Access::ReadWrite).expect("migrates");
        assert_eq!(current_version(&s).expect("version"), latest_version());
    }
}
