//! The DuckDB store: opening it safely (one writer, read-only sessions, no network),
//! schema migrations, and typed queries per table.

pub mod bids;
pub mod dashboard;
pub mod images;
pub mod import_merge;
pub mod iqm_outliers;
pub mod iqms;
pub mod lookup;
pub mod migrations;
pub mod queues;
pub mod raters;
pub mod ratings;
pub mod raw;
pub mod runs;
pub mod summaries;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duckdb::Connection;

use raw::{RawConnection, RawDatabase};

/// Environment variable naming the store when `--db` is not given.
pub const DB_ENV: &str = "CDWQC_DB";
/// The store's file name when neither `--db` nor `CDWQC_DB` is given.
pub const DEFAULT_DB: &str = "cdwqc.duckdb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no store at {path}: run `cdwqc init` first (or pass --db / set CDWQC_DB)")]
    NotFound { path: PathBuf },
    #[error(
        "store {path} is in use by another process that holds it for writing ({detail}); \
         close that cdwqc (dashboard, import, training) and try again"
    )]
    Locked { path: PathBuf, detail: String },
    #[error(
        "store {path} has schema version {found}, newer than this cdwqc understands \
         (up to {known}): upgrade cdwqc; the store was left untouched"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "store {path} has schema version {found} and needs migrating to {known}; \
         open it once for writing (e.g. `cdwqc init --db {path}`)"
    )]
    NeedsMigration {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "store {path}: migration {version} ({name}) failed, nothing of it was applied: {source}"
    )]
    Migration {
        path: PathBuf,
        version: i64,
        name: &'static str,
        source: Box<duckdb::Error>,
    },
    #[error("store {path}: {source}")]
    Db {
        path: PathBuf,
        source: Box<duckdb::Error>,
    },
    #[error("store {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How a session may use the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

/// An open store. DuckDB allows one writing process per file; a second writer gets
/// [`StoreError::Locked`].
pub struct Store {
    // Declared before `db`: the connection closes before the database can.
    conn: Connection,
    path: PathBuf,
    access: Access,
    db: Arc<RawDatabase>,
    /// The import staging tables exist on `conn` (they are connection-local).
    staging_ready: bool,
    /// The epoch of the IQM outlier flags the image list joins (`dashboard.rs`), and
    /// whether they are the shared table of that epoch (else `conn`'s own).
    iqm_flags_epoch: std::cell::Cell<Option<(u64, bool)>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("access", &self.access)
            .finish()
    }
}

/// Resolves the store path from the flag, then `CDWQC_DB`, then `./cdwqc.duckdb`.
/// (clap fills the flag from the environment; this is for library callers.)
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(DB_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_DB),
    }
}

fn base_config(access: Access) -> [(&'static str, &'static str); 3] {
    // No network at run time: extensions are never downloaded or loaded on demand.
    [
        (
            "access_mode",
            match access {
                Access::ReadWrite => "READ_WRITE",
                Access::ReadOnly => "READ_ONLY",
            },
        ),
        ("autoload_known_extensions", "false"),
        ("autoinstall_known_extensions", "false"),
    ]
}

impl Store {
    /// Creates the store if absent and brings its schema up to date.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(StoreError::Invalid {
                path: path.to_path_buf(),
                message: format!("folder {} does not exist", parent.display()),
            });
        }
        Self::connect(path, Access::ReadWrite)
    }

    /// Opens an existing store. Read-write sessions migrate an older schema;
    /// read-only sessions refuse one.
    pub fn open(path: &Path, access: Access) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound {
                path: path.to_path_buf(),
            });
        }
        Self::connect(path, access)
    }

    fn connect(path: &Path, access: Access) -> Result<Self, StoreError> {
        check_is_duckdb(path)?;
        let db = |source| classify(path, source);
        // Opened through the C API so that SQL sessions can also parse and bind
        // statements on their own connection (`raw_connection`).
        let database = RawDatabase::open(path, &base_config(access)).map_err(db)?;
        let conn = database.connection().map_err(db)?;
        // Times are shown and exported in UTC whatever the machine's zone.
        conn.execute_batch("SET TimeZone = 'UTC'").map_err(db)?;
        let store = Self {
            conn,
            path: path.to_path_buf(),
            access,
            db: database,
            staging_ready: false,
            iqm_flags_epoch: std::cell::Cell::new(None),
        };
        migrations::bring_up_to_date(&store)?;
        // Best effort: while the summaries stay stale, readers go to the ratings.
        let _ = store.repair_stale_summaries();
        Ok(store)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// A second connection to the same open database through DuckDB's C API, for
    /// checking ad-hoc SQL statement by statement before it runs.
    pub fn raw_connection(&self) -> Result<RawConnection, StoreError> {
        RawConnection::new(&self.db).map_err(|message| StoreError::Invalid {
            path: self.path.clone(),
            message,
        })
    }

    /// A new connection of the duckdb crate to the same open database.
    pub(crate) fn sibling(&self, access: Access) -> Result<Store, StoreError> {
        Ok(Store {
            conn: self.conn.try_clone().map_err(|e| self.err(e))?,
            path: self.path.clone(),
            access,
            db: Arc::clone(&self.db),
            staging_ready: false,
            iqm_flags_epoch: std::cell::Cell::new(None),
        })
    }

    /// Wraps a DuckDB error with the store's path.
    pub fn err(&self, source: duckdb::Error) -> StoreError {
        classify(&self.path, source)
    }
}

/// Turns DuckDB's lock conflict into a message a user can act on.
/// Where DuckDB's database files carry their magic bytes (after an 8-byte checksum).
const DUCKDB_MAGIC: (usize, &[u8; 4]) = (8, b"DUCK");

/// An existing file must be a DuckDB database: DuckDB opens a CSV, Parquet or JSON file
/// named as the database as an in-memory database over it, where every write (an
/// import, a rating) reports success and is lost when the command ends.
fn check_is_duckdb(path: &Path) -> Result<(), StoreError> {
    let invalid = |message: String| StoreError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    // DuckDB's own names for databases that are no file: `init` reported a store
    // created, and every later command found none.
    let text = path.to_string_lossy();
    if text.starts_with(":memory:") || text.starts_with("md:") || text.starts_with("motherduck:") {
        return Err(invalid(
            "names a database that is no file (DuckDB's in-memory or remote names): give \
             the store's file path"
                .into(),
        ));
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(invalid(format!("cannot read it: {e}"))),
    };
    if meta.is_dir() {
        return Err(invalid(
            "is a folder: give the store's file (e.g. FOLDER/cdwqc.duckdb)".into(),
        ));
    }
    let not_store = || {
        invalid(
            "is not a DuckDB database (a store's file starts with DuckDB's header); \
             give another path for a new store"
                .into(),
        )
    };
    if !meta.is_file() {
        return Err(not_store());
    }
    // An empty file is DuckDB's to refuse or to fill, as before.
    if meta.len() == 0 {
        return Ok(());
    }
    let (file, _) = crate::imaging::nifti::open_regular(path)
        .map_err(|e| invalid(format!("cannot read it: {}", e.reason())))?;
    let (offset, magic) = DUCKDB_MAGIC;
    let mut head = [0u8; 12];
    let mut read = 0;
    let mut file = file;
    while read < head.len() {
        match std::io::Read::read(&mut file, &mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(invalid(format!("cannot read it: {e}"))),
        }
    }
    if head.get(offset..offset + magic.len()) == Some(&magic[..]) {
        Ok(())
    } else {
        Err(not_store())
    }
}

fn classify(path: &Path, source: duckdb::Error) -> StoreError {
    let text = source.to_string();
    if text.contains("Could not set lock") || text.contains("Conflicting lock") {
        let detail = text
            .split_once("Conflicting lock is held in ")
            .map(|(_, rest)| format!("held by {}", rest.trim()))
            .unwrap_or(text);
        return StoreError::Locked {
            path: path.to_path_buf(),
            detail,
        };
    }
    StoreError::Db {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_open_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.duckdb");
        assert!(matches!(
            Store::open(&path, Access::ReadWrite),
            Err(StoreError::NotFound { .. })
        ));
        drop(Store::create(&path).expect("create"));
        let ro = Store::open(&path, Access::ReadOnly).expect("read-only open");
        let n: i64 = ro
            .conn()
            .query_row("SELECT count(*) FROM images", [], |r| r.get(0))
            .expect("query");
        assert_eq!(n, 0);
        let err = ro
            .conn()
            .execute_batch("INSERT INTO raters (name) VALUES ('x')")
            .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }
}
