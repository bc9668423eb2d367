//! The store's database opened through DuckDB's C API, so that ad-hoc SQL can be
//! parsed and bound by DuckDB itself (statement by statement, with each statement's
//! kind) before any of it runs. The duckdb crate keeps its connection handles private;
//! opening the database here and handing it to the crate gives both views of it.

use std::ffi::{CStr, CString, c_char, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use duckdb::ffi;

/// An open DuckDB database, closed when the last store and connection using it go.
pub(crate) struct RawDatabase(ffi::duckdb_database);

// SAFETY: a DuckDB database handle may be used from any thread; DuckDB synchronises
// access to the instance itself.
unsafe impl Send for RawDatabase {}
unsafe impl Sync for RawDatabase {}

impl RawDatabase {
    /// Opens `path` with the given configuration options.
    pub(crate) fn open(path: &Path, options: &[(&str, &str)]) -> Result<Arc<Self>, duckdb::Error> {
        let failure = |message: String| {
            duckdb::Error::DuckDBFailure(ffi::Error::new(ffi::DuckDBError), Some(message))
        };
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| failure("the store's path holds a NUL byte".into()))?;
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // SAFETY: plain C API calls on handles created here and destroyed below.
        unsafe {
            if ffi::duckdb_create_config(&mut config) != ffi::DuckDBSuccess {
                return Err(failure("cannot create a DuckDB configuration".into()));
            }
            for (name, value) in options {
                let (Ok(n), Ok(v)) = (CString::new(*name), CString::new(*value)) else {
                    ffi::duckdb_destroy_config(&mut config);
                    return Err(failure(format!("bad configuration option {name}")));
                };
                if ffi::duckdb_set_config(config, n.as_ptr(), v.as_ptr()) != ffi::DuckDBSuccess {
                    ffi::duckdb_destroy_config(&mut config);
                    return Err(failure(format!(
                        "DuckDB refused the option {name} = {value}"
                    )));
                }
            }
            let mut db: ffi::duckdb_database = ptr::null_mut();
            let mut error: *mut c_char = ptr::null_mut();
            let rc = ffi::duckdb_open_ext(c_path.as_ptr(), &mut db, config, &mut error);
            ffi::duckdb_destroy_config(&mut config);
            if rc != ffi::DuckDBSuccess {
                let message = if error.is_null() {
                    "cannot open the database".to_string()
                } else {
                    let text = CStr::from_ptr(error).to_string_lossy().into_owned();
                    ffi::duckdb_free(error as *mut c_void);
                    text
                };
                return Err(failure(message));
            }
            Ok(Arc::new(Self(db)))
        }
    }

    /// A connection of the duckdb crate to this database.
    pub(crate) fn connection(&self) -> Result<duckdb::Connection, duckdb::Error> {
        // SAFETY: the handle is open for as long as `self` lives, and every store
        // holding the connection also holds the `Arc` of `self` (dropped after it).
        unsafe { duckdb::Connection::open_from_raw(self.0) }
    }
}

impl Drop for RawDatabase {
    fn drop(&mut self) {
        // SAFETY: the last owner closes the handle once.
        unsafe { ffi::duckdb_close(&mut self.0) }
    }
}

/// What kind of statement DuckDB made of a piece of SQL (its `duckdb_statement_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementKind(pub ffi::duckdb_statement_type);

impl StatementKind {
    pub const SELECT: Self = Self(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT);

    /// DuckDB's name for the kind, as in its error messages.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 31] = [
            "INVALID",
            "SELECT",
            "INSERT",
            "UPDATE",
            "EXPLAIN",
            "DELETE",
            "PREPARE",
            "CREATE",
            "EXECUTE",
            "ALTER",
            "TRANSACTION",
            "COPY",
            "ANALYZE",
            "VARIABLE SET",
            "CREATE FUNCTION",
            "DROP",
            "EXPORT",
            "PRAGMA",
            "VACUUM",
            "CALL",
            "SET",
            "LOAD",
            "RELATION",
            "EXTENSION",
            "LOGICAL PLAN",
            "ATTACH",
            "DETACH",
            "MULTI",
            "COPY DATABASE",
            "UPDATE EXTENSIONS",
            "MERGE INTO",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("UNKNOWN")
    }
}

/// A connection of its own to the store's database, used only to parse and bind SQL.
pub struct RawConnection {
    con: ffi::duckdb_connection,
    _db: Arc<RawDatabase>,
}

// SAFETY: a connection may move between threads; it is never shared (no `Sync`).
unsafe impl Send for RawConnection {}

impl RawConnection {
    pub(crate) fn new(db: &Arc<RawDatabase>) -> Result<Self, String> {
        let mut con: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: the database is open while `db` lives; the connection keeps it.
        if unsafe { ffi::duckdb_connect(db.0, &mut con) } != ffi::DuckDBSuccess {
            return Err("cannot open a connection to the store".into());
        }
        Ok(Self {
            con,
            _db: Arc::clone(db),
        })
    }

    /// Splits `sql` into statements with DuckDB's parser and prepares (binds) each one
    /// without running it; returns every statement's kind, in order. Statements are
    /// bound against the store as it is now, before any of them runs.
    pub fn statement_kinds(&self, sql: &str) -> Result<Vec<StatementKind>, String> {
        let text = CString::new(sql).map_err(|_| "the SQL holds a NUL character".to_string())?;
        let mut extracted: ffi::duckdb_extracted_statements = ptr::null_mut();
        // SAFETY: C API calls on this open connection; every handle made here is
        // destroyed before returning.
        unsafe {
            let n = ffi::duckdb_extract_statements(self.con, text.as_ptr(), &mut extracted);
            let result = if n == 0 {
                let error = ffi::duckdb_extract_statements_error(extracted);
                Err(if error.is_null() {
                    "nothing to run: no SQL statement given".to_string()
                } else {
                    CStr::from_ptr(error).to_string_lossy().into_owned()
                })
            } else {
                let mut kinds = Vec::with_capacity(n as usize);
                let mut failed = None;
                for i in 0..n {
                    let mut prepared: ffi::duckdb_prepared_statement = ptr::null_mut();
                    let rc = ffi::duckdb_prepare_extracted_statement(
                        self.con,
                        extracted,
                        i,
                        &mut prepared,
                    );
                    if rc != ffi::DuckDBSuccess {
                        let error = ffi::duckdb_prepare_error(prepared);
                        let text = if error.is_null() {
                            "cannot be prepared".to_string()
                        } else {
                            CStr::from_ptr(error).to_string_lossy().into_owned()
                        };
                        ffi::duckdb_destroy_prepare(&mut prepared);
                        failed = Some(if n > 1 {
                            format!("statement {} of {n}: {text}", i + 1)
                        } else {
                            text
                        });
                        break;
                    }
                    kinds.push(StatementKind(ffi::duckdb_prepared_statement_type(prepared)));
                    ffi::duckdb_destroy_prepare(&mut prepared);
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(kinds),
                }
            };
            ffi::duckdb_destroy_extracted(&mut extracted);
            result
        }
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        // SAFETY: disconnects this connection once.
        unsafe { ffi::duckdb_disconnect(&mut self.con) }
    }
}
