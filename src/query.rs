//! Ad-hoc SQL on the store: what a session may run (checked statement by statement
//! with DuckDB's own parser before anything runs; read-only unless asked; no file
//! access, settings or extensions from SQL), result sets and their output formats
//! (aligned table, CSV, TSV, JSON, Parquet), written only where the store is not.

use std::io::Write;
use std::path::{Path, PathBuf};

use duckdb::types::{TimeUnit, ValueRef};
use duckdb::{Connection, ffi};
use serde_json::{Map, Value as Json};

use crate::store::raw::{RawConnection, StatementKind};
use crate::store::{Access, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Sql(String),
    #[error("{0}\nThe store is opened read-only for queries; pass --write to allow changes.")]
    ReadOnly(String),
    /// A statement or function no session runs (see docs/security.md).
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// Output formats of `cdwqc sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Tsv,
    Json,
    Parquet,
}

/// How a query session may touch the world.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub write: bool,
    /// Let a read-only session read files anywhere (read_csv, read_parquet...).
    pub allow_files: bool,
}

/// Statement kinds a session with writing on may run. Everything else is refused in
/// every session: COPY, EXPORT, ATTACH, DETACH, INSTALL / LOAD, SET / RESET, PRAGMA,
/// CALL, EXPLAIN (EXPLAIN ANALYZE runs what it explains), PREPARE / EXECUTE (they run
/// a statement checked nowhere), COPY DATABASE, UPDATE EXTENSIONS.
const WRITE_KINDS: [StatementKind; 12] = [
    StatementKind::SELECT,
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_INSERT),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DELETE),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MERGE_INTO),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE_FUNC),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ALTER),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_TRANSACTION),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ANALYZE),
    StatementKind(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VACUUM),
];

/// Table functions no session runs although they sit in a query: they switch on
/// logging or profiling to files (which, pointed at a folder DuckDB may not touch,
/// leaves the whole database failing), checkpoint, run SQL given as text or as a
/// serialized plan, which no check here has seen, or open a DuckDB file (the store
/// itself is one DuckDB always lets a connection open).
pub const REFUSED_FUNCTIONS: [&str; 14] = [
    "enable_logging",
    "disable_logging",
    "truncate_duckdb_logs",
    "enable_profiling",
    "disable_profiling",
    "checkpoint",
    "force_checkpoint",
    "query",
    "query_table",
    "json_execute_serialized_sql",
    "read_duckdb",
    // They switch the parser of the whole process, which `lock_configuration` leaves open.
    "enable_peg_parser",
    "disable_peg_parser",
    "check_peg_parser",
];

/// Checks `sql` before any of it runs: DuckDB's parser splits it and each statement is
/// bound on `raw`, a connection of its own; a read-only session runs queries only, a
/// writing one data and schema changes only; no session runs the
/// [`REFUSED_FUNCTIONS`], directly or through a view or macro of the store.
pub fn check(
    raw: &RawConnection,
    conn: &Connection,
    sql: &str,
    write: bool,
) -> Result<(), QueryError> {
    let kinds = raw.statement_kinds(sql).map_err(|e| {
        if write && e.starts_with("statement ") {
            QueryError::Sql(format!(
                "{e}\n(every statement is checked before the first one runs, so a statement \
                 that needs a table made by an earlier one must be run on its own)"
            ))
        } else if e.contains("has been disabled by configuration") {
            QueryError::Sql(format!(
                "{e}\n(a read-only session opens no file; --allow-files lets it read files)"
            ))
        } else {
            QueryError::Sql(e)
        }
    })?;
    let n = kinds.len();
    let which = |i: usize| {
        if n > 1 {
            format!("statement {} of {n}", i + 1)
        } else {
            "the statement".to_string()
        }
    };
    for (i, kind) in kinds.iter().enumerate() {
        if !WRITE_KINDS.contains(kind) {
            return Err(QueryError::Refused(format!(
                "{} is {}, which cdwqc never runs: SQL sessions reach no file and cannot \
                 change DuckDB's settings or extensions (docs/security.md)",
                which(i),
                kind.name()
            )));
        }
        if !write && *kind != StatementKind::SELECT {
            return Err(QueryError::ReadOnly(format!(
                "{} is {}: a read-only session runs queries only",
                which(i),
                kind.name()
            )));
        }
    }
    // While a view or macro calls a refused function, only DROP runs (to remove it).
    let drop_only = kinds
        .iter()
        .all(|k| k.0 == ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP);
    check_functions(conn, sql, !drop_only, !write && n > 1)
}

/// Refuses the [`REFUSED_FUNCTIONS`] wherever DuckDB's syntax tree of `sql` names
/// them, and in the store's own views and macros.
fn check_functions(
    conn: &Connection,
    sql: &str,
    definitions: bool,
    read_only_script: bool,
) -> Result<(), QueryError> {
    let text = |e: duckdb::Error| QueryError::Sql(e.to_string());
    let tree: String = conn
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |r| r.get(0))
        .map_err(text)?;
    // DuckDB serializes scripts of queries only. A read-only script it cannot serialize
    // holds a PRAGMA (a query once DuckDB has rewritten it) beside other statements,
    // whose calls then go unseen: `PRAGMA version; SELECT * FROM query('...')` ran
    // query(). A PRAGMA alone calls nothing, so it runs on its own. (A writing session
    // is checked by its statements' kinds; docs/security.md, "Known limits".)
    if read_only_script && tree.starts_with("{\"error\":true") {
        return Err(QueryError::Refused(
            "a PRAGMA among other statements is refused in a read-only session: DuckDB \
             cannot serialize such a script, so its calls cannot be checked; run the PRAGMA \
             on its own"
                .into(),
        ));
    }
    if let Some(name) = function_names(&tree)
        .iter()
        .find(|n| REFUSED_FUNCTIONS.contains(&n.to_ascii_lowercase().as_str()))
    {
        return Err(QueryError::Refused(format!(
            "{name}() is refused: it changes DuckDB's logging, profiling or storage, \
             or runs SQL no check has seen (docs/security.md)"
        )));
    }
    if !definitions {
        return Ok(());
    }
    let mut stmt = conn
        .prepare(include_str!("../sql/store/user_definitions.sql"))
        .map_err(text)?;
    let definitions = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(text)?;
    for definition in definitions {
        let (name, body) = definition.map_err(text)?;
        let body = body.to_ascii_lowercase();
        if let Some(f) = REFUSED_FUNCTIONS
            .iter()
            .find(|f| body.contains(&format!("{f}(")) || body.contains(&format!("{f}\"(")))
        {
            return Err(QueryError::Refused(format!(
                "{name} in the store calls {f}(), which cdwqc refuses: drop it \
                 (cdwqc sql --write 'drop ...') before anything else runs"
            )));
        }
    }
    Ok(())
}

/// Every function a serialized query calls: the values of its `"function_name"` keys,
/// found in the text rather than in a parsed tree, whose depth a parser would have to
/// bound (a query nested 40 subqueries deep passed serde_json's limit of 128 levels,
/// and with it the check). Inside a JSON string every quote is escaped, so the key can
/// only match where it is a key.
fn function_names(serialized: &str) -> Vec<String> {
    const KEY: &str = "\"function_name\":\"";
    let mut names = Vec::new();
    let mut rest = serialized;
    while let Some(at) = rest.find(KEY) {
        let value = &rest[at + KEY.len() - 1..];
        // The string runs to the first quote not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in value.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        // A name that does not decode is kept as written, so it is still compared.
        let quoted = &value[..=end];
        names.push(
            serde_json::from_str::<String>(quoted)
                .unwrap_or_else(|_| quoted.trim_matches('"').to_string()),
        );
        rest = &value[end + 1..];
    }
    names
}

/// Runs `f` inside a read-only transaction unless `write`. Fails closed: if the
/// transaction cannot start (one opened with writing on is still open), nothing runs.
/// With `write`, the per-image summaries are marked stale before `f` and repaired
/// after it (`store::summaries`): SQL may write ratings or predictions the store layer
/// never sees.
pub fn guarded<T>(
    conn: &Connection,
    write: bool,
    f: impl FnOnce() -> Result<T, QueryError>,
) -> Result<T, QueryError> {
    if write {
        use crate::store::summaries;
        // Neither step may stop the SQL (a ROLLBACK of an aborted transaction must
        // run): a mark that cannot be written means the state table is gone or the
        // transaction aborted, and a missing table reads as stale; a repair that fails
        // leaves the mark, so readers go to the ratings themselves until the next
        // read-write open of the store repairs.
        let _ = summaries::mark_stale(conn);
        let out = f();
        let _ = summaries::repair(conn);
        return out;
    }
    conn.execute_batch("BEGIN TRANSACTION READ ONLY")
        .map_err(|e| {
            QueryError::Sql(format!(
                "{e}\n(a transaction begun with writing on is still open: COMMIT or ROLLBACK it with writing on)"
            ))
        })?;
    let out = f();
    // Nothing was written; a rollback that fails (no transaction left) loses nothing.
    let _ = conn.execute_batch("ROLLBACK");
    out
}

/// Whether `conn` is inside a transaction a user began (`BEGIN` without `COMMIT`, or one
/// a failed statement aborted). The duckdb crate's `is_autocommit` always says no, and a
/// `BEGIN` to find out would itself fail and abort the user's transaction: in autocommit
/// mode every statement is a transaction of its own, so two reads of the transaction id
/// differ, and inside one they agree.
pub fn transaction_open(conn: &Connection) -> bool {
    let id = || conn.query_row("SELECT txid_current()", [], |r| r.get::<_, i64>(0));
    match (id(), id()) {
        (Ok(a), Ok(b)) => a == b,
        (Err(e), _) | (_, Err(e)) => e.to_string().contains("aborted"),
    }
}

/// A store opened for ad-hoc SQL.
pub struct Session {
    store: Store,
    raw: RawConnection,
    write: bool,
}

impl Session {
    pub fn open(db: &Path, opts: &SessionOptions) -> Result<Self, QueryError> {
        if opts.write && opts.allow_files {
            return Err(QueryError::Usage(
                "--allow-files is for read-only sessions: a session that writes reaches no \
                 file, so that no statement can overwrite the store"
                    .into(),
            ));
        }
        let access = if opts.write {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let store = Store::open(db, access)?;
        let raw = store.raw_connection()?;
        let settings = match (opts.write, opts.allow_files) {
            // The database is read-only and DuckDB's local file system is switched off:
            // no statement can open any file, the store's own included.
            (false, false) => {
                "SET enable_external_access = false; \
                 SET disabled_filesystems = 'LocalFileSystem'; \
                 SET lock_configuration = true;"
            }
            (false, true) => "SET lock_configuration = true;",
            // The store's WAL needs the file system; no folder is allowed, and the
            // statements that could name the store's own files are refused by kind.
            (true, _) => "SET enable_external_access = false; SET lock_configuration = true;",
        };
        store
            .conn()
            .execute_batch(settings)
            .map_err(|e| store.err(e))?;
        Ok(Self {
            store,
            raw,
            write: opts.write,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs every statement of `sql`; returns the result of the last one.
    /// The checks [`Self::run`] makes before any statement runs (kinds, functions,
    /// binding): an error here means nothing ran.
    pub fn check(&self, sql: &str) -> Result<(), QueryError> {
        check(&self.raw, self.store.conn(), sql, self.write)
    }

    pub fn run(&self, sql: &str) -> Result<ResultSet, QueryError> {
        let conn = self.store.conn();
        check(&self.raw, conn, sql, self.write)?;
        guarded(conn, self.write, || {
            // The duckdb crate splits with DuckDB's parser too, runs all statements
            // but the last and prepares the last: the ones checked above.
            let mut stmt = conn.prepare(sql).map_err(|e| self.sql_error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.sql_error(e))?;
            let mut out = Vec::new();
            let mut columns: Option<Vec<String>> = None;
            while let Some(row) = rows.next().map_err(|e| self.sql_error(e))? {
                let stmt = row.as_ref();
                let n = stmt.column_count();
                if columns.is_none() {
                    if let Some(problem) = unreadable_column(stmt) {
                        return Err(QueryError::Sql(problem));
                    }
                    columns = Some(stmt.column_names());
                }
                let mut cells = Vec::with_capacity(n);
                for i in 0..n {
                    cells.push(cell(row.get_ref(i).map_err(|e| self.sql_error(e))?));
                }
                out.push(cells);
            }
            drop(rows);
            let columns = columns.unwrap_or_else(|| stmt.column_names());
            Ok(ResultSet { columns, rows: out })
        })
    }

    /// Writes the result of `sql` to a Parquet file (through a DuckDB of its own that
    /// holds only these rows), never over the store; returns the row count.
    pub fn copy_to_parquet(&self, sql: &str, out: &Path) -> Result<u64, QueryError> {
        let result = self.run(sql)?;
        write_output(out, self.store.path(), Format::Parquet, &result)?;
        Ok(result.rows.len() as u64)
    }

    fn sql_error(&self, e: duckdb::Error) -> QueryError {
        let text = e.to_string();
        if text.contains("read-only mode") || text.contains("attached in read-only mode") {
            QueryError::ReadOnly(text)
        } else {
            QueryError::Sql(text)
        }
    }
}

/// Closes DuckDB's file access for every connection to the store's database (no
/// folder allowed; DuckDB still reaches the store and its WAL, which only statements
/// refused by [`check`] could name) and locks the configuration, so no later
/// statement can reopen it.
pub fn close_file_access(store: &Store) -> Result<(), StoreError> {
    store
        .conn()
        .execute_batch("SET enable_external_access = false; SET lock_configuration = true;")
        .map_err(|e| store.err(e))
}

/// The folder holding the store (relative export names are taken from there).
pub fn project_dir(db: &Path) -> PathBuf {
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    dir.canonicalize().unwrap_or(dir)
}

/// Where an output file really goes, after `..` and symbolic links: refused when that
/// is the store, its WAL or DuckDB's temporary folder of it, a hard link of the store,
/// any other DuckDB database, or a link to nothing.
pub fn resolve_output(path: &Path, store: &Path) -> Result<PathBuf, QueryError> {
    let refuse = |why: String| QueryError::Output {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
    };
    // `out/` names a folder: without one there, a file called `out` was written.
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(refuse("names a folder: give a file name".into()));
    }
    let resolved = match std::fs::metadata(path) {
        Ok(_) => path.canonicalize().map_err(|e| refuse(e.to_string()))?,
        Err(_) if std::fs::symlink_metadata(path).is_ok() => {
            return Err(refuse("a symbolic link to nothing: refused".into()));
        }
        Err(_) => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .ok_or_else(|| refuse("names no file".into()))?;
            parent
                .canonicalize()
                .map_err(|e| refuse(format!("folder {}: {e}", parent.display())))?
                .join(name)
        }
    };
    let store = store.canonicalize().unwrap_or_else(|_| store.to_path_buf());
    let with = |suffix: &str| {
        let mut s = store.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    if is_store_file(&resolved, &store) {
        return Err(refuse(format!(
            "that is the store {} or one of its files: refused",
            store.display()
        )));
    }
    if let Ok(meta) = std::fs::metadata(&resolved) {
        use std::os::unix::fs::MetadataExt;
        // The output replaces the file by a rename: over a device (as root, `--html
        // /dev/null` replaced the system's null device with a report), a FIFO or a
        // folder, that would destroy what stands under the name.
        if meta.is_dir() {
            return Err(refuse("a folder: give a file name inside it".into()));
        }
        if !meta.is_file() {
            return Err(refuse(
                "not a regular file (a device, FIFO or socket), which the output would \
                 replace: refused, give a file name (leave --out off to print)"
                    .into(),
            ));
        }

        let same = |other: &Path| {
            std::fs::metadata(other).is_ok_and(|o| o.dev() == meta.dev() && o.ino() == meta.ino())
        };
        if same(&store) || same(&with(".wal")) {
            return Err(refuse(format!(
                "a link to the store {}: refused",
                store.display()
            )));
        }
        if is_duckdb_file(&resolved) {
            return Err(refuse(
                "a DuckDB database: refused, choose another name".into(),
            ));
        }
    }
    // Another store's write-ahead log holds saves its database file does not have yet.
    let name = resolved.to_string_lossy();
    for suffix in [".wal", ".wal.recovery"] {
        if let Some(database) = name.strip_suffix(suffix)
            && is_duckdb_file(Path::new(database))
        {
            return Err(refuse(format!(
                "the write-ahead log of the DuckDB database {database}: refused"
            )));
        }
    }
    Ok(resolved)
}

/// Whether `resolved` (a path after `..` and links) is the store or a file DuckDB keeps
/// beside it: its WAL, the WAL's recovery copy or its temporary folder.
pub fn is_store_file(resolved: &Path, store: &Path) -> bool {
    let store = store.canonicalize().unwrap_or_else(|_| store.to_path_buf());
    let with = |suffix: &str| {
        let mut s = store.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    resolved == store
        || resolved == with(".wal")
        || resolved == with(".wal.recovery")
        || resolved.starts_with(with(".tmp"))
}

/// Writes `bytes` to `path` once [`resolve_output`] accepts it: into a new file beside
/// it, then renamed over it, so that no existing file (a link to the store or its WAL
/// planted under the name included) is ever written into. Returns where it went.
pub fn write_file(path: &Path, store: &Path, bytes: &[u8]) -> Result<PathBuf, QueryError> {
    let resolved = resolve_output(path, store)?;
    let io = |source: std::io::Error| QueryError::Output {
        path: path.to_path_buf(),
        source,
    };
    crate::replace::replace(&resolved, bytes, crate::replace::Durability::Content)
        .map_err(|e| io(e.source))?;
    Ok(resolved)
}

impl From<crate::replace::ReplaceError> for QueryError {
    fn from(e: crate::replace::ReplaceError) -> Self {
        Self::Output {
            path: e.path,
            source: e.source,
        }
    }
}

/// DuckDB files carry "DUCK" at byte 8.
fn is_duckdb_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 12];
    // Regular files only, opened without blocking: reading a FIFO's head waits forever.
    crate::imaging::nifti::open_regular(path)
        .is_ok_and(|(mut f, _)| f.read_exact(&mut head).is_ok() && &head[8..12] == b"DUCK")
}

/// Writes `result` to `path` in `format` once [`resolve_output`] accepts it. Text
/// formats are written into the resolved file, which is opened without truncating and
/// checked again on the open handle; Parquet is written beside it and renamed over it,
/// which replaces a directory entry and never writes into another file.
pub fn write_output(
    path: &Path,
    store: &Path,
    format: Format,
    result: &ResultSet,
) -> Result<(), QueryError> {
    let resolved = resolve_output(path, store)?;
    let io = |source: std::io::Error| QueryError::Output {
        path: path.to_path_buf(),
        source,
    };
    if format == Format::Parquet {
        return crate::replace::replace_with(
            &resolved,
            crate::replace::Durability::Content,
            |temp, _| result.write_parquet(temp),
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&resolved)
        .map_err(io)?;
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().map_err(io)?;
        let canonical = store.canonicalize().unwrap_or_else(|_| store.to_path_buf());
        if std::fs::metadata(&canonical)
            .is_ok_and(|s| s.dev() == meta.dev() && s.ino() == meta.ino())
        {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "became the store while opening: refused",
            )));
        }
    }
    file.set_len(0).map_err(io)?;
    result
        .write(format, &mut file)
        .and_then(|_| file.flush())
        .map_err(io)
}

/// One value of a result, typed enough for every output format.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
    /// A LIST or ARRAY value (the predictions' probabilities): a JSON array in JSON
    /// output, `[a, b]` in text.
    List(Vec<Cell>),
}

impl Cell {
    pub fn is_numeric(&self) -> bool {
        matches!(self, Cell::Int(_) | Cell::Float(_))
    }

    /// Text for tables and CSV (NULL as empty; blobs as their size).
    pub fn display(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Bool(b) => b.to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => format_float(*f),
            Cell::Text(t) => t.clone(),
            Cell::Blob(b) => format!("<blob {} bytes>", b.len()),
            Cell::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|c| match c {
                        Cell::Null => "NULL".to_string(),
                        c => c.display(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn to_json(&self) -> Json {
        match self {
            Cell::Null => Json::Null,
            Cell::Bool(b) => Json::Bool(*b),
            Cell::Int(i) => i64::try_from(*i)
                .map(Json::from)
                .unwrap_or_else(|_| Json::String(i.to_string())),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or_else(|| Json::String(format_float(*f))),
            Cell::Text(t) => Json::String(t.clone()),
            Cell::Blob(b) => Json::String(b.iter().map(|x| format!("{x:02x}")).collect()),
            Cell::List(items) => Json::Array(items.iter().map(Cell::to_json).collect()),
        }
    }
}

fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        // Shortest text that reads back to the same number.
        format!("{f}")
    }
}

/// The first column of an executed statement whose values the duckdb crate cannot read
/// (its reader panics on them), as a message naming it and the cast that reads it.
pub(crate) fn unreadable_column(stmt: &duckdb::Statement<'_>) -> Option<String> {
    stmt.column_names()
        .iter()
        .enumerate()
        .find_map(|(i, name)| {
            let data_type = stmt.column_type(i);
            (!readable(&data_type)).then(|| {
                format!(
                    "column \"{name}\" is of type {data_type}, which cdwqc cannot read: cast \
                     it, for example \"{name}\"::VARCHAR"
                )
            })
        })
}

/// Whether the duckdb crate reads values of this Arrow type (its reader panics on the
/// others: TIME_NS, intervals other than month-day-nano, 256-bit decimals).
fn readable(data_type: &duckdb::arrow::datatypes::DataType) -> bool {
    use duckdb::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
    match data_type {
        DataType::Null
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::FixedSizeBinary(_)
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Timestamp(..)
        | DataType::Date32
        | DataType::Time64(TimeUnit::Microsecond)
        | DataType::Interval(IntervalUnit::MonthDayNano) => true,
        DataType::List(field) | DataType::LargeList(field) | DataType::FixedSizeList(field, _) => {
            readable(field.data_type())
        }
        DataType::Map(field, _) => readable(field.data_type()),
        DataType::Struct(fields) => fields.iter().all(|f| readable(f.data_type())),
        DataType::Union(fields, _) => fields.iter().all(|(_, f)| readable(f.data_type())),
        DataType::Dictionary(key, value) => {
            matches!(**key, DataType::UInt8 | DataType::UInt16 | DataType::UInt32)
                && readable(value)
        }
        _ => false,
    }
}

pub(crate) fn cell(v: ValueRef<'_>) -> Cell {
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Boolean(b) => Cell::Bool(b),
        ValueRef::TinyInt(i) => Cell::Int(i.into()),
        ValueRef::SmallInt(i) => Cell::Int(i.into()),
        ValueRef::Int(i) => Cell::Int(i.into()),
        ValueRef::BigInt(i) => Cell::Int(i.into()),
        ValueRef::HugeInt(i) => Cell::Int(i),
        ValueRef::UTinyInt(i) => Cell::Int(i.into()),
        ValueRef::USmallInt(i) => Cell::Int(i.into()),
        ValueRef::UInt(i) => Cell::Int(i.into()),
        ValueRef::UBigInt(i) => Cell::Int(i.into()),
        ValueRef::Float(f) => Cell::Float(f.into()),
        ValueRef::Double(f) => Cell::Float(f),
        ValueRef::Decimal(d) => Cell::Text(d.to_string()),
        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        ValueRef::Timestamp(unit, value) => Cell::Text(format_timestamp(unit, value)),
        ValueRef::Date32(days) => Cell::Text(format_date(i64::from(days))),
        ValueRef::Time64(unit, value) => {
            let micros = to_micros(unit, value);
            Cell::Text(format_time_of_day(micros))
        }
        other => owned_cell(other.to_owned()),
    }
}

/// A cell of a value DuckDB hands over owned (the elements of a list, and types
/// `cell` has no borrowed form for).
fn owned_cell(v: duckdb::types::Value) -> Cell {
    use duckdb::types::Value;
    match v {
        Value::Null => Cell::Null,
        Value::Boolean(b) => Cell::Bool(b),
        Value::TinyInt(i) => Cell::Int(i.into()),
        Value::SmallInt(i) => Cell::Int(i.into()),
        Value::Int(i) => Cell::Int(i.into()),
        Value::BigInt(i) => Cell::Int(i.into()),
        Value::HugeInt(i) => Cell::Int(i),
        Value::UTinyInt(i) => Cell::Int(i.into()),
        Value::USmallInt(i) => Cell::Int(i.into()),
        Value::UInt(i) => Cell::Int(i.into()),
        Value::UBigInt(i) => Cell::Int(i.into()),
        Value::Float(f) => Cell::Float(f.into()),
        Value::Double(f) => Cell::Float(f),
        Value::Text(t) => Cell::Text(t),
        Value::Blob(b) => Cell::Blob(b),
        Value::List(items) | Value::Array(items) => {
            Cell::List(items.into_iter().map(owned_cell).collect())
        }
        other => Cell::Text(format_owned(&other)),
    }
}

fn format_owned(v: &duckdb::types::Value) -> String {
    use duckdb::types::Value;
    match v {
        Value::Null => "NULL".into(),
        Value::Text(t) => t.clone(),
        Value::List(items) | Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(format_owned)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Boolean(b) => b.to_string(),
        Value::TinyInt(i) => i.to_string(),
        Value::SmallInt(i) => i.to_string(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(i) => i.to_string(),
        Value::Float(f) => format_float(f64::from(*f)),
        Value::Double(f) => format_float(*f),
        Value::Timestamp(unit, value) => format_timestamp(*unit, *value),
        Value::Enum(s) => s.clone(),
        Value::Struct(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{k}: {}", format_owned(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::HugeInt(i) => i.to_string(),
        Value::UHugeInt(i) => i.to_string(),
        Value::UTinyInt(i) => i.to_string(),
        Value::USmallInt(i) => i.to_string(),
        Value::UInt(i) => i.to_string(),
        Value::UBigInt(i) => i.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Date32(days) => format_date(i64::from(*days)),
        Value::Time64(unit, value) => format_time_of_day(to_micros(*unit, *value)),
        Value::Blob(b) | Value::Geometry(b) => format!("<blob {} bytes>", b.len()),
        Value::Interval {
            months,
            days,
            nanos,
        } => format!("{months} months {days} days {} us", nanos / 1_000),
        Value::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", format_owned(k), format_owned(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Union(inner) => format_owned(inner),
        // A type newer than this cdwqc: say so rather than print its debug form.
        _ => "<value of an unsupported type>".into(),
    }
}

fn to_micros(unit: TimeUnit, value: i64) -> i64 {
    match unit {
        TimeUnit::Second => value.saturating_mul(1_000_000),
        TimeUnit::Millisecond => value.saturating_mul(1_000),
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value / 1_000,
    }
}

fn format_timestamp(unit: TimeUnit, value: i64) -> String {
    let micros = to_micros(unit, value);
    let days = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    format!("{} {}", format_date(days), format_time_of_day(rest))
}

fn format_time_of_day(micros: i64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let base = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:06}")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn format_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Column names and rows of one query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Widest a table column gets before its values are cut with an ellipsis.
const MAX_TABLE_WIDTH: usize = 60;

impl ResultSet {
    /// Writes the rows to a Parquet file through an in-memory DuckDB (for results the
    /// program computed itself rather than read with SQL). Column types follow the cells:
    /// BOOLEAN, BIGINT, DOUBLE, BLOB or VARCHAR.
    pub fn write_parquet(&self, path: &Path) -> Result<(), QueryError> {
        let sql_err = |e: duckdb::Error| QueryError::Sql(e.to_string());
        let conn = duckdb::Connection::open_in_memory().map_err(sql_err)?;
        let kind = |i: usize| -> &'static str {
            let mut kind = "";
            for row in &self.rows {
                let k = match &row[i] {
                    Cell::Null => continue,
                    Cell::Bool(_) => "BOOLEAN",
                    Cell::Int(i) if i64::try_from(*i).is_ok() => "BIGINT",
                    // HUGEINT and UBIGINT values past BIGINT's range.
                    Cell::Int(_) => "HUGEINT",
                    Cell::Float(_) => "DOUBLE",
                    Cell::Blob(_) => "BLOB",
                    // Lists are written as their text, as before they were cells.
                    Cell::Text(_) | Cell::List(_) => "VARCHAR",
                };
                kind = match (kind, k) {
                    ("", k) => k,
                    (a, b) if a == b => a,
                    ("BIGINT", "HUGEINT") | ("HUGEINT", "BIGINT") => "HUGEINT",
                    ("BIGINT" | "HUGEINT", "DOUBLE") | ("DOUBLE", "BIGINT" | "HUGEINT") => "DOUBLE",
                    _ => "VARCHAR",
                };
            }
            if kind.is_empty() { "VARCHAR" } else { kind }
        };
        let kinds: Vec<&str> = (0..self.columns.len()).map(kind).collect();
        let columns: Vec<String> = self
            .columns
            .iter()
            .zip(&kinds)
            .map(|(c, k)| format!("\"{}\" {k}", c.replace('"', "\"\"")))
            .collect();
        conn.execute_batch(&format!("CREATE TABLE result ({})", columns.join(", ")))
            .map_err(sql_err)?;
        {
            let mut appender = conn.appender("result").map_err(sql_err)?;
            for row in &self.rows {
                let values: Vec<duckdb::types::Value> = row
                    .iter()
                    .zip(&kinds)
                    .map(|(c, k)| match (c, *k) {
                        (Cell::Null, _) => duckdb::types::Value::Null,
                        (Cell::Bool(b), "BOOLEAN") => duckdb::types::Value::Boolean(*b),
                        (Cell::Int(i), "BIGINT") => match i64::try_from(*i) {
                            Ok(i) => duckdb::types::Value::BigInt(i),
                            Err(_) => duckdb::types::Value::HugeInt(*i),
                        },
                        (Cell::Int(i), "HUGEINT") => duckdb::types::Value::HugeInt(*i),
                        (Cell::Int(i), "DOUBLE") => duckdb::types::Value::Double(*i as f64),
                        (Cell::Float(f), "DOUBLE") => duckdb::types::Value::Double(*f),
                        (Cell::Blob(b), "BLOB") => duckdb::types::Value::Blob(b.clone()),
                        (other, _) => duckdb::types::Value::Text(other.display()),
                    })
                    .collect();
                appender
                    .append_row(duckdb::appender_params_from_iter(values))
                    .map_err(sql_err)?;
            }
            appender.flush().map_err(sql_err)?;
        }
        // Parquet has no 128-bit integer (DuckDB would write HUGEINT as DOUBLE, losing
        // digits): such a column is written as DECIMAL(38, 0), exact, or as its digits
        // when a value has more than 38.
        let projection: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .zip(&kinds)
            .map(|((i, c), k)| {
                let name = format!("\"{}\"", c.replace('"', "\"\""));
                if *k != "HUGEINT" {
                    return name;
                }
                let limit = 10i128.pow(38);
                let fits = self.rows.iter().all(|row| match &row[i] {
                    Cell::Int(v) => v.unsigned_abs() < limit.unsigned_abs(),
                    _ => true,
                });
                let kind = if fits { "DECIMAL(38, 0)" } else { "VARCHAR" };
                format!("CAST({name} AS {kind}) AS {name}")
            })
            .collect();
        let target = path.display().to_string().replace('\'', "''");
        // Into the file itself: over an existing file DuckDB otherwise writes
        // `tmp_NAME` beside it first, opened with O_TRUNC through any link planted there.
        conn.execute_batch(&format!(
            "COPY (SELECT {} FROM result) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)",
            projection.join(", ")
        ))
        .map_err(|e| QueryError::Output {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    pub fn write(&self, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
        match format {
            Format::Table => self.write_table(out),
            Format::Csv => self.write_delimited(out, b','),
            Format::Tsv => self.write_delimited(out, b'\t'),
            Format::Json => self.write_json(out),
            Format::Parquet => Err(std::io::Error::other(
                "Parquet output is written by DuckDB to a file (--out)",
            )),
        }
    }

    fn write_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let cut = |s: String| -> String {
            let s = s.replace(['\n', '\t'], " ");
            if s.chars().count() > MAX_TABLE_WIDTH {
                let mut t: String = s.chars().take(MAX_TABLE_WIDTH - 1).collect();
                t.push('…');
                t
            } else {
                s
            }
        };
        let texts: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| match c {
                        Cell::Null => "NULL".to_string(),
                        other => cut(other.display()),
                    })
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &texts {
            for (w, t) in widths.iter_mut().zip(row) {
                *w = (*w).max(t.chars().count());
            }
        }
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|i| {
                self.rows.iter().any(|r| r[i].is_numeric())
                    && self
                        .rows
                        .iter()
                        .all(|r| r[i].is_numeric() || r[i] == Cell::Null)
            })
            .collect();
        let line = |cells: &[String], out: &mut dyn Write| -> std::io::Result<()> {
            let mut parts = Vec::with_capacity(cells.len());
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(c.chars().count());
                parts.push(if numeric[i] {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                });
            }
            writeln!(out, "{}", parts.join("  ").trim_end())
        };
        line(&self.columns, out)?;
        let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
        writeln!(out, "{}", rule.join("  "))?;
        for row in &texts {
            line(row, out)?;
        }
        let n = self.rows.len();
        writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })
    }

    fn write_delimited(&self, out: &mut dyn Write, delimiter: u8) -> std::io::Result<()> {
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(out);
        w.write_record(&self.columns)?;
        for row in &self.rows {
            w.write_record(row.iter().map(Cell::display))?;
        }
        w.flush()
    }

    fn write_json(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let rows: Vec<Json> = self
            .rows
            .iter()
            .map(|r| {
                let mut m = Map::new();
                for (name, c) in self.columns.iter().zip(r) {
                    m.insert(name.clone(), c.to_json());
                }
                Json::Object(m)
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.duckdb");
        drop(Store::create(&path).expect("create"));
        let store = Store::open(&path, Access::ReadWrite).expect("open");
        (dir, store)
    }

    #[test]
    fn every_statement_is_checked_by_duckdb_before_any_runs() {
        let (_dir, store) = store();
        let raw = store.raw_connection().expect("raw");
        let conn = store.conn();
        assert!(check(&raw, conn, "select 'a;b'; -- c;d\nselect $$;$$", false).is_ok());
        let e = check(
            &raw,
            conn,
            "select $$'$$; commit; create table pwned as select 1 as x; select '$$'",
            false,
        )
        .expect_err("commit refused");
        assert!(matches!(e, QueryError::ReadOnly(_)), "{e}");
        assert!(
            e.to_string().contains("statement 2 of 4 is TRANSACTION"),
            "{e}"
        );
        let e = check(
            &raw,
            conn,
            "insert into raters (name) values ('x'); copy raters to 'x.csv'",
            true,
        )
        .expect_err("copy refused");
        assert!(e.to_string().contains("statement 2 of 2 is COPY"), "{e}");
        let raters: i64 = conn
            .query_row("select count(*) from raters", [], |r| r.get(0))
            .expect("count");
        assert_eq!(raters, 0, "nothing ran");
        for refused in [
            "select * from system.main.enable_logging()",
            "select (select count(*) from query('select 1'))",
            "with t as (select * from checkpoint()) select * from t",
        ] {
            let e = check(&raw, conn, refused, true).expect_err(refused);
            assert!(matches!(e, QueryError::Refused(_)), "{refused}: {e}");
        }
        conn.execute_batch("create view sneaky as select * from enable_logging()")
            .expect("view");
        let e = check(&raw, conn, "select 1", false).expect_err("view refused");
        assert!(e.to_string().contains("view sneaky"), "{e}");
        assert!(check(&raw, conn, "drop view sneaky", true).is_ok());
    }

    #[test]
    fn output_paths_resolve_links_and_never_name_the_store() {
        let (dir, store) = store();
        let db = store.path().to_path_buf();
        let d = dir.path();
        std::os::unix::fs::symlink(&db, d.join("link.csv")).expect("symlink");
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        for bad in [
            "s.duckdb",
            "sub/../s.duckdb",
            "link.csv",
            "s.duckdb.wal",
            "sub",
            "new/",
        ] {
            assert!(resolve_output(&d.join(bad), &db).is_err(), "{bad}");
        }
        // A device or a FIFO would be replaced by the output's rename.
        let fifo = d.join("fifo.html");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("mkfifo").success());
        for node in [fifo.as_path(), Path::new("/dev/null")] {
            let e = resolve_output(node, &db).expect_err("refused");
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let fine = resolve_output(&d.join("sub/../r.csv"), &db).expect("a new file");
        assert_eq!(fine, d.canonicalize().expect("dir").join("r.csv"));
        let rs = ResultSet {
            columns: vec!["a".into()],
            rows: vec![vec![Cell::Int(1)]],
        };
        write_output(&d.join("r.csv"), &db, Format::Csv, &rs).expect("csv");
        write_output(&d.join("r.csv"), &db, Format::Csv, &rs).expect("over a text file");
        assert_eq!(
            std::fs::read_to_string(d.join("r.csv")).expect("r"),
            "a\n1\n"
        );
    }

    #[test]
    fn formats_dates_and_times() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(19_723), "2024-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(
            format_timestamp(TimeUnit::Microsecond, 1_700_000_000_123_456),
            "2023-11-14 22:13:20.123456"
        );
    }

    #[test]
    fn lists_are_json_arrays_and_read_as_before_in_text() {
        let (_dir, store) = store();
        let mut stmt = store
            .conn()
            .prepare(
                "select [0.0, 1.0]::DOUBLE[] as p, ['a', NULL] as t, [[1, 2], []] as nested, \
                 NULL::INTEGER[] as none",
            )
            .expect("prepare");
        let mut rows = stmt.query([]).expect("query");
        let row = rows.next().expect("next").expect("a row");
        let cells: Vec<Cell> = (0..4)
            .map(|i| cell(row.get_ref(i).expect("value")))
            .collect();
        assert_eq!(
            cells.iter().map(Cell::display).collect::<Vec<_>>(),
            ["[0, 1]", "[a, NULL]", "[[1, 2], []]", ""]
        );
        assert_eq!(
            Json::Array(cells.iter().map(Cell::to_json).collect()),
            serde_json::json!([[0.0, 1.0], ["a", null], [[1, 2], []], null])
        );
    }

    #[test]
    fn table_aligns_numbers_right_and_counts_rows() {
        let rs = ResultSet {
            columns: vec!["name".into(), "n".into()],
            rows: vec![
                vec![Cell::Text("a".into()), Cell::Int(5)],
                vec![Cell::Text("bbb".into()), Cell::Int(120)],
            ],
        };
        let mut out = Vec::new();
        rs.write(Format::Table, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "name    n\n────  ───\na       5\nbbb   120\n(2 rows)\n"
        );
    }
}
