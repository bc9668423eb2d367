//! Ad-hoc SQL on the store: a safe session (read-only unless asked, no file access
//! outside the project folder, no extension downloads), result sets and their output
//! formats (aligned table, CSV, TSV, JSON, Parquet).

use std::io::Write;
use std::path::{Path, PathBuf};

use duckdb::types::{TimeUnit, ValueRef};
use serde_json::{Map, Value as Json};

use crate::store::{Access, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Sql(String),
    #[error("{0}\nThe store is opened read-only for queries; pass --write to allow changes.")]
    ReadOnly(String),
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
    /// Lift the restriction of file access to the project folder.
    pub allow_files: bool,
    /// Extra folders the session may write to (the folder of `--out`).
    pub extra_dirs: Vec<PathBuf>,
}

/// A store opened for ad-hoc SQL.
pub struct Session {
    store: Store,
}

impl Session {
    pub fn open(db: &Path, opts: &SessionOptions) -> Result<Self, QueryError> {
        let access = if opts.write {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let store = Store::open(db, access)?;
        if !opts.allow_files {
            let mut dirs = vec![project_dir(db)];
            dirs.extend(opts.extra_dirs.iter().cloned());
            restrict_files(&store, &dirs)?;
        }
        Ok(Self { store })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs every statement of `sql`; returns the result of the last one.
    pub fn run(&self, sql: &str) -> Result<ResultSet, QueryError> {
        let statements = split_statements(sql);
        let Some((last, before)) = statements.split_last() else {
            return Err(QueryError::Usage("no SQL statement given".into()));
        };
        let conn = self.store.conn();
        for s in before {
            conn.execute_batch(s).map_err(|e| self.sql_error(e))?;
        }
        let mut stmt = conn.prepare(last).map_err(|e| self.sql_error(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sql_error(e))?;
        let mut out = Vec::new();
        let mut columns: Option<Vec<String>> = None;
        while let Some(row) = rows.next().map_err(|e| self.sql_error(e))? {
            let stmt = row.as_ref();
            let n = stmt.column_count();
            if columns.is_none() {
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
    }

    /// Writes the result of one query to a Parquet file with DuckDB's own writer.
    pub fn copy_to_parquet(&self, sql: &str, out: &Path) -> Result<u64, QueryError> {
        let statements = split_statements(sql);
        let Some((last, before)) = statements.split_last() else {
            return Err(QueryError::Usage("no SQL statement given".into()));
        };
        let conn = self.store.conn();
        for s in before {
            conn.execute_batch(s).map_err(|e| self.sql_error(e))?;
        }
        let target = out.display().to_string().replace('\'', "''");
        let copy = format!(
            "COPY ({}) TO '{target}' (FORMAT parquet)",
            last.trim().trim_end_matches(';')
        );
        conn.execute(&copy, [])
            .map(|n| n as u64)
            .map_err(|e| self.sql_error(e))
    }

    fn sql_error(&self, e: duckdb::Error) -> QueryError {
        let text = e.to_string();
        if text.contains("read-only mode") {
            QueryError::ReadOnly(text)
        } else {
            QueryError::Sql(text)
        }
    }
}

/// Limits the file access of every connection to the store's database to `dirs`
/// and locks the configuration, so no later statement can lift the limit.
pub fn restrict_files(store: &Store, dirs: &[PathBuf]) -> Result<(), StoreError> {
    let list = dirs
        .iter()
        .map(|d| format!("'{}'", d.display().to_string().replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    // Order matters: directories are allowed first, then everything else is
    // closed, then the settings are locked so a query cannot reopen them.
    store
        .conn()
        .execute_batch(&format!(
            "SET allowed_directories = [{list}]; \
             SET enable_external_access = false; \
             SET lock_configuration = true;"
        ))
        .map_err(|e| store.err(e))
}

/// The folder a read-only session may read: the one holding the store.
pub fn project_dir(db: &Path) -> PathBuf {
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    dir.canonicalize().unwrap_or(dir)
}

/// Splits SQL text into statements on semicolons outside quotes and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                current.push(c);
                for d in chars.by_ref() {
                    current.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                current.push(' ');
            }
            ';' => {
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
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
        other => Cell::Text(format_owned(&other.to_owned())),
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
        other => format!("{other:?}"),
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
                    Cell::Int(_) => "BIGINT",
                    Cell::Float(_) => "DOUBLE",
                    Cell::Blob(_) => "BLOB",
                    Cell::Text(_) => "VARCHAR",
                };
                kind = match (kind, k) {
                    ("", k) => k,
                    (a, b) if a == b => a,
                    ("BIGINT", "DOUBLE") | ("DOUBLE", "BIGINT") => "DOUBLE",
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
                        (Cell::Int(i), "BIGINT") => duckdb::types::Value::BigInt(*i as i64),
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
        let target = path.display().to_string().replace('\'', "''");
        conn.execute_batch(&format!("COPY result TO '{target}' (FORMAT parquet)"))
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

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let s = split_statements("select 'a;b'; -- c;d\nselect \"x;y\" /* ; */ from t;  ");
        assert_eq!(s, vec!["select 'a;b'", "select \"x;y\"   from t"]);
        assert!(split_statements(" ; -- nothing\n").is_empty());
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
