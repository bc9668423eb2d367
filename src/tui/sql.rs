//! The SQL view apart from drawing: a multi-line editor, the query history and saved
//! queries, what the view's keys and the worker's answers do to them (reported to the
//! app as a [`SqlOutcome`]), and the worker side that runs a query with a row cap and
//! exports results.
//!
//! Queries run on their own connection to the store, on a worker thread. Before any
//! statement runs, DuckDB's parser splits the text and every statement is bound on a
//! second connection and checked as for `cdwqc sql` ([`crate::query::check`]):
//! read-only unless writing is turned on (queries only, run inside
//! `BEGIN TRANSACTION READ ONLY` ... `ROLLBACK`), and never COPY, ATTACH, SET...
//! Rows are fetched from a streaming result and fetching stops at [`ROW_LIMIT`] rows
//! or [`BYTE_LIMIT`] bytes, so a huge result is never computed in full.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use duckdb::Connection;

use super::keys::Action;
use crate::query::{Cell, Format, QueryError, ResultSet, cell};
use crate::store::Store;

/// Most rows fetched for one result.
pub const ROW_LIMIT: usize = 10_000;
/// Most bytes of values fetched for one result (text, blobs), whatever the row count.
pub const BYTE_LIMIT: usize = 64 << 20;
/// History entries kept.
const HISTORY_KEEP: usize = 1000;
/// Widest a result column is drawn before its values are cut.
pub const MAX_COLUMN_WIDTH: usize = 40;
/// Environment variable naming the history file.
pub const HISTORY_ENV: &str = "CDWQC_SQL_HISTORY";

/// The saved queries shipped in the binary: `sql/queries/*.sql`.
const EMBEDDED: [(&str, &str); 4] = [
    (
        "images_per_sequence",
        include_str!("../../sql/queries/images_per_sequence.sql"),
    ),
    (
        "images_per_scanner",
        include_str!("../../sql/queries/images_per_scanner.sql"),
    ),
    (
        "image_geometry",
        include_str!("../../sql/queries/image_geometry.sql"),
    ),
    (
        "import_failures",
        include_str!("../../sql/queries/import_failures.sql"),
    ),
];

/// Multi-line text with a cursor (row, column in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Editor {
    lines: Vec<String>,
    row: usize,
    col: usize,
}

impl Default for Editor {
    fn default() -> Self {
        Self {
            lines: vec![String::new()],
            row: 0,
            col: 0,
        }
    }
}

fn byte_at(line: &str, col: usize) -> usize {
    line.char_indices().nth(col).map_or(line.len(), |(i, _)| i)
}

fn char_len(line: &str) -> usize {
    line.chars().count()
}

impl Editor {
    /// The text with the cursor at its end.
    pub fn from_text(text: &str) -> Self {
        let mut lines: Vec<String> = text
            .split('\n')
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        while lines.len() > 1 && lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        let row = lines.len() - 1;
        let col = char_len(&lines[row]);
        Self { lines, row, col }
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// (row, column in characters).
    pub fn cursor(&self) -> (usize, usize) {
        (self.row, self.col)
    }

    pub fn is_blank(&self) -> bool {
        self.lines.iter().all(|l| l.trim().is_empty())
    }

    pub fn insert(&mut self, c: char) {
        let line = &mut self.lines[self.row];
        line.insert(byte_at(line, self.col), c);
        self.col += 1;
    }

    pub fn newline(&mut self) {
        let line = &mut self.lines[self.row];
        let rest = line.split_off(byte_at(line, self.col));
        self.lines.insert(self.row + 1, rest);
        self.row += 1;
        self.col = 0;
    }

    pub fn backspace(&mut self) {
        if self.col > 0 {
            let line = &mut self.lines[self.row];
            line.remove(byte_at(line, self.col - 1));
            self.col -= 1;
        } else if self.row > 0 {
            let line = self.lines.remove(self.row);
            self.row -= 1;
            self.col = char_len(&self.lines[self.row]);
            self.lines[self.row].push_str(&line);
        }
    }

    pub fn delete(&mut self) {
        if self.col < char_len(&self.lines[self.row]) {
            let line = &mut self.lines[self.row];
            line.remove(byte_at(line, self.col));
        } else if self.row + 1 < self.lines.len() {
            let next = self.lines.remove(self.row + 1);
            self.lines[self.row].push_str(&next);
        }
    }

    pub fn left(&mut self) {
        if self.col > 0 {
            self.col -= 1;
        } else if self.row > 0 {
            self.row -= 1;
            self.col = char_len(&self.lines[self.row]);
        }
    }

    pub fn right(&mut self) {
        if self.col < char_len(&self.lines[self.row]) {
            self.col += 1;
        } else if self.row + 1 < self.lines.len() {
            self.row += 1;
            self.col = 0;
        }
    }

    /// Moves `delta` lines, keeping the column where the line is long enough.
    pub fn vertical(&mut self, delta: i64) {
        let last = self.lines.len() as i64 - 1;
        self.row = (self.row as i64 + delta).clamp(0, last) as usize;
        self.col = self.col.min(char_len(&self.lines[self.row]));
    }

    pub fn home(&mut self) {
        self.col = 0;
    }

    pub fn end(&mut self) {
        self.col = char_len(&self.lines[self.row]);
    }

    /// Applies an editing key; false when the key is not one.
    pub fn edit(&mut self, key: &KeyEvent) -> bool {
        if key.modifiers.contains(KeyModifiers::CONTROL) {
            return false;
        }
        match key.code {
            KeyCode::Char(c) => self.insert(c),
            KeyCode::Enter => self.newline(),
            KeyCode::Tab => {
                for _ in 0..4 {
                    self.insert(' ');
                }
            }
            KeyCode::Backspace => self.backspace(),
            KeyCode::Delete => self.delete(),
            KeyCode::Left => self.left(),
            KeyCode::Right => self.right(),
            KeyCode::Up => self.vertical(-1),
            KeyCode::Down => self.vertical(1),
            KeyCode::PageUp => self.vertical(-10),
            KeyCode::PageDown => self.vertical(10),
            KeyCode::Home => self.home(),
            KeyCode::End => self.end(),
            _ => return false,
        }
        true
    }
}

/// A query of `sql/queries/`: its file name without `.sql`, its header comment and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedQuery {
    pub name: String,
    pub description: String,
    pub sql: String,
}

impl SavedQuery {
    pub fn new(name: &str, sql: &str) -> Self {
        let description = sql
            .lines()
            .map_while(|l| l.trim_start().strip_prefix("--"))
            .map(str::trim)
            .filter(|l| !l.starts_with("Usage:"))
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            name: name.to_string(),
            description,
            sql: sql.trim_end().to_string(),
        }
    }
}

/// The saved queries: those shipped in the binary, replaced or joined by the `*.sql`
/// files of `dir` (`sql/queries` of the current folder, where `cdwqc sql -f` finds them).
pub fn saved_queries(dir: Option<&Path>) -> Vec<SavedQuery> {
    let mut queries: Vec<SavedQuery> = EMBEDDED
        .iter()
        .map(|(name, sql)| SavedQuery::new(name, sql))
        .collect();
    let mut files: Vec<PathBuf> = dir
        .and_then(|d| std::fs::read_dir(d).ok())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    for path in files {
        let (Some(stem), Ok(text)) = (path.file_stem(), std::fs::read_to_string(&path)) else {
            continue;
        };
        let query = SavedQuery::new(&stem.to_string_lossy(), &text);
        match queries.iter_mut().find(|q| q.name == query.name) {
            Some(q) => *q = query,
            None => queries.push(query),
        }
    }
    queries
}

/// `$CDWQC_SQL_HISTORY`, else `$XDG_STATE_HOME/cdwqc/sql_history.jsonl`, else
/// `~/.local/state/cdwqc/sql_history.jsonl`.
pub fn history_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(p) = var(HISTORY_ENV) {
        return Some(PathBuf::from(p));
    }
    let state = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("cdwqc/sql_history.jsonl"))
}

/// The history, oldest first: one JSON string per line; unreadable lines are skipped.
/// A file grown past twice the kept entries is rewritten with the newest ones.
/// The most a history file may hold; a longer file is not one of ours.
const HISTORY_MAX_BYTES: u64 = 64 << 20;

/// The history file's text, when `path` holds one: a `.jsonl` file, regular, under one
/// name (no symbolic link, no second hard link), every line of which is a JSON string
/// (a last line cut short by a crash aside). Anything else (a spreadsheet, a store, a
/// link planted under the name or a variable pointing at the wrong file; a one-column
/// CSV of quoted cells reads as JSON strings, hence the name) is never cut or appended
/// to. `Ok(None)`: no file yet.
fn read_history_file(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let not_history = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a query history ({why}); it is left as it is"),
        )
    };
    if path.extension().is_none_or(|e| e != "jsonl") {
        return Err(not_history("its name does not end in .jsonl"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_history("a symbolic link"));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_history("not a regular file"));
    }
    if meta.nlink() > 1 {
        return Err(not_history("another name of a file with several"));
    }
    if meta.len() > HISTORY_MAX_BYTES {
        return Err(not_history("too large"));
    }
    let mut bytes = Vec::new();
    file.take(HISTORY_MAX_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8(bytes).map_err(|_| not_history("not UTF-8 text"))?;
    let lines: Vec<&str> = text.lines().collect();
    let whole = lines.len().saturating_sub(1);
    if lines[..whole]
        .iter()
        .any(|line| serde_json::from_str::<String>(line).is_err())
    {
        return Err(not_history("a line is not a saved query"));
    }
    Ok(Some(text))
}

pub fn load_history(path: &Path) -> Vec<String> {
    let Ok(Some(text)) = read_history_file(path) else {
        return Vec::new();
    };
    let entries: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<String>(l).ok())
        .collect();
    let lines = text.lines().count();
    let kept = entries[entries.len().saturating_sub(HISTORY_KEEP)..].to_vec();
    if lines > 2 * HISTORY_KEEP {
        let body: String = kept
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|l| l + "\n")
            .collect();
        // Best effort: a failed rewrite leaves the longer file, still readable. Replaced
        // whole under its name, never written through whatever the name points to.
        let _ = crate::replace::replace(path, body.as_bytes(), crate::replace::Durability::None);
    }
    kept
}

pub fn append_history(path: &Path, sql: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    read_history_file(path)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    // Checked again on the open handle: the name may have changed since it was read.
    let meta = file.metadata()?;
    if !meta.is_file() || meta.nlink() > 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a query history (a link or not a regular file); it is left as it is",
        ));
    }
    let line = serde_json::to_string(sql).map_err(std::io::Error::other)?;
    writeln!(file, "{line}")
}

/// Where keys go in the SQL view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    #[default]
    Editor,
    Results,
}

/// A finished query: its rows (at most [`ROW_LIMIT`]) and how they were fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlResult {
    pub result: Arc<ResultSet>,
    /// More rows existed than were fetched.
    pub truncated: bool,
    pub elapsed: Duration,
    /// Widest text per column (header included), capped at [`MAX_COLUMN_WIDTH`].
    pub widths: Vec<usize>,
    /// Columns holding only numbers (and NULLs), drawn right-aligned.
    pub numeric: Vec<bool>,
    /// The query ran with writing on.
    pub wrote: bool,
}

impl SqlResult {
    pub fn new(result: ResultSet, truncated: bool, elapsed: Duration, wrote: bool) -> Self {
        let mut widths: Vec<usize> = result.columns.iter().map(|c| char_len(c)).collect();
        let mut numeric = vec![true; result.columns.len()];
        let mut any_number = vec![false; result.columns.len()];
        for row in &result.rows {
            for (i, c) in row.iter().enumerate() {
                let w = match c {
                    Cell::Null => 4,
                    other => char_len(&other.display()),
                };
                // A number is never cut: its column takes its full width.
                let cap = if c.is_numeric() { w } else { MAX_COLUMN_WIDTH };
                widths[i] = widths[i].max(w.min(cap));
                any_number[i] |= c.is_numeric();
                numeric[i] &= c.is_numeric() || *c == Cell::Null;
            }
        }
        for (n, any) in numeric.iter_mut().zip(any_number) {
            *n &= any;
        }
        Self {
            result: Arc::new(result),
            truncated,
            elapsed,
            widths: widths
                .into_iter()
                .zip(&numeric)
                .map(|(w, &n)| if n { w } else { w.min(MAX_COLUMN_WIDTH) })
                .collect(),
            numeric,
            wrote,
        }
    }
}

/// Work for the SQL thread (runs, cancels) or, for exports, a thread of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlRequest {
    Run {
        id: u64,
        sql: String,
        write: bool,
    },
    /// Interrupts the running query, if any.
    Cancel,
    Export {
        result: Arc<ResultSet>,
        path: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub enum SqlResponse {
    Ran {
        id: u64,
        result: Result<SqlResult, String>,
        /// A transaction the user began with writing on is still open (`BEGIN` without
        /// `COMMIT`, or a statement that failed inside one): quitting would roll it back.
        transaction_open: bool,
    },
    /// The file written and its row count.
    Exported(Result<(PathBuf, usize), String>),
    /// Nothing to report (a cancel answered on the same thread).
    Idle,
}

/// Answers one request on this thread, on `store`'s connection.
pub fn serve(store: &Store, request: SqlRequest) -> SqlResponse {
    match request {
        SqlRequest::Run { id, sql, write } => {
            let result = run_query(store, &sql, write, ROW_LIMIT, BYTE_LIMIT);
            SqlResponse::Ran {
                id,
                result,
                transaction_open: write && crate::query::transaction_open(store.conn()),
            }
        }
        SqlRequest::Cancel => SqlResponse::Idle,
        export @ SqlRequest::Export { .. } => serve_export(export),
    }
}

/// Writes an export; needs no store.
pub fn serve_export(request: SqlRequest) -> SqlResponse {
    match request {
        SqlRequest::Export { result, path } => SqlResponse::Exported(
            export(&result, &path)
                .map(|n| (path.clone(), n))
                .map_err(|e| format!("{}: {e}", path.display())),
        ),
        _ => SqlResponse::Idle,
    }
}

/// Checks and runs `sql` on `store`'s connection and fetches the last statement's
/// rows, up to `row_limit` rows and `byte_limit` bytes of values. Read-only unless
/// `write`.
pub fn run_query(
    store: &Store,
    sql: &str,
    write: bool,
    row_limit: usize,
    byte_limit: usize,
) -> Result<SqlResult, String> {
    let started = Instant::now();
    let conn = store.conn();
    let text = |e: QueryError| match e {
        // The view adds which key turns writing on.
        QueryError::ReadOnly(reason) => format!("{reason} (read-only mode)"),
        other => other.to_string(),
    };
    let raw = store.raw_connection().map_err(|e| e.to_string())?;
    crate::query::check(&raw, conn, sql, write).map_err(text)?;
    let (result, truncated) = crate::query::guarded(conn, write, || {
        fetch(conn, sql, row_limit, byte_limit).map_err(QueryError::Sql)
    })
    .map_err(text)?;
    Ok(SqlResult::new(result, truncated, started.elapsed(), write))
}

/// Executes `sql` (the duckdb crate runs every statement but the last and prepares the
/// last) with a streaming result and fetches at most `row_limit` rows of the last.
fn fetch(
    conn: &Connection,
    sql: &str,
    row_limit: usize,
    byte_limit: usize,
) -> Result<(ResultSet, bool), String> {
    let text = |e: duckdb::Error| e.to_string();
    let mut stmt = conn.prepare(sql).map_err(text)?;
    // A streaming execution computes rows only as they are fetched.
    drop(stmt.stream_arrow([]).map_err(text)?);
    // The duckdb crate panics on values it has no reader for (TIME_NS): in the
    // dashboard that left the terminal out of raw mode and the view running forever.
    if let Some(problem) = crate::query::unreadable_column(&stmt) {
        return Err(problem);
    }
    let columns = stmt.column_names();
    let mut out = Vec::new();
    let mut truncated = false;
    if row_limit > 0 {
        let mut rows = stmt.raw_query();
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(text)? {
            if out.len() >= row_limit || bytes >= byte_limit {
                truncated = true;
                break;
            }
            let mut cells = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                let c = cell(row.get_ref(i).map_err(text)?);
                bytes += cell_bytes(&c);
                cells.push(c);
            }
            out.push(cells);
        }
    }
    Ok((ResultSet { columns, rows: out }, truncated))
}

/// The output format a file name asks for.
pub fn export_format(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Some(Format::Csv),
        "tsv" => Some(Format::Tsv),
        "json" => Some(Format::Json),
        "parquet" | "pq" => Some(Format::Parquet),
        _ => None,
    }
}

/// Writes a result to a new file (never over an existing one); returns its row count.
pub fn export(result: &ResultSet, path: &Path) -> Result<usize, String> {
    let format = export_format(path)
        .ok_or("the name must end in .csv, .tsv, .json or .parquet".to_string())?;
    // Never over anything already there, a symbolic link included (to the store or
    // to nothing): the file must be new.
    if std::fs::symlink_metadata(path).is_ok() {
        return Err("exists already: choose another name".into());
    }
    if format == Format::Parquet {
        // Created here, so DuckDB writes into a new file of this session's own.
        std::fs::File::create_new(path).map_err(|e| e.to_string())?;
        result.write_parquet(path).map_err(|e| {
            let _ = std::fs::remove_file(path);
            e.to_string()
        })?;
    } else {
        let mut file = std::fs::File::create_new(path).map_err(|e| e.to_string())?;
        result
            .write(format, &mut file)
            .and_then(|_| file.flush())
            .map_err(|e| e.to_string())?;
    }
    Ok(result.rows.len())
}

/// "12 ms", "1.3 s", "2 min 5 s".
pub fn format_elapsed(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} min {} s", ms / 60_000, ms / 1000 % 60)
    }
}

/// What the SQL view asks of the app after an input or a response: a status line, a
/// query to remember in the history file, work for the SQL worker, and whether the
/// store may have changed under the other views.
#[derive(Debug, Default, PartialEq)]
pub struct SqlOutcome {
    pub message: Option<String>,
    pub remember: Option<(PathBuf, String)>,
    pub request: Option<SqlRequest>,
    pub store_changed: bool,
}

impl SqlOutcome {
    fn say(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
            ..Self::default()
        }
    }
}

/// The view's state.
#[derive(Debug, Default)]
pub struct SqlState {
    pub editor: Editor,
    pub focus: Focus,
    /// Statements may change the store.
    pub write: bool,
    /// The query in flight: its id and when it was sent.
    pub running: Option<(u64, Instant)>,
    next_id: u64,
    /// The last query's result or error (the DuckDB error text).
    pub outcome: Option<Result<SqlResult, String>>,
    /// Selected row of the result, and first column shown.
    pub row: usize,
    pub column: usize,
    /// Executed queries, oldest first.
    pub history: Vec<String>,
    /// Where history browsing stands, and the text it replaced.
    history_at: Option<usize>,
    draft: String,
    pub history_file: Option<PathBuf>,
    pub saved: Vec<SavedQuery>,
    /// The saved-query list, open at this entry.
    pub picker: Option<usize>,
    /// The export file name being typed, and why the last try failed.
    pub export_input: Option<String>,
    pub export_error: Option<String>,
    /// Relative export names are taken from here (the store's folder).
    pub export_dir: PathBuf,
    /// The last query with writing on left a transaction open.
    pub transaction_open: bool,
    /// Quit was asked once while it was open: the next quit rolls it back.
    pub quit_confirmed: bool,
}

impl SqlState {
    pub fn new(
        saved: Vec<SavedQuery>,
        history: Vec<String>,
        history_file: Option<PathBuf>,
        export_dir: PathBuf,
    ) -> Self {
        Self {
            saved,
            history,
            history_file,
            export_dir,
            ..Self::default()
        }
    }

    /// Starts a run: records it in the history and returns the request.
    pub fn start(&mut self) -> Result<SqlRequest, String> {
        if self.running.is_some() {
            return Err("a query is running: wait, or cancel it".into());
        }
        if self.editor.is_blank() {
            return Err("nothing to run: type a query first".into());
        }
        let sql = self.editor.text().trim().to_string();
        self.next_id += 1;
        self.running = Some((self.next_id, Instant::now()));
        if self.history.last() != Some(&sql) {
            self.history.push(sql.clone());
        }
        self.history_at = None;
        Ok(SqlRequest::Run {
            id: self.next_id,
            sql,
            write: self.write,
        })
    }

    /// Takes a finished run; false when it is not the one awaited.
    pub fn finish(&mut self, id: u64, result: Result<SqlResult, String>) -> bool {
        if self.running.is_none_or(|(awaited, _)| awaited != id) {
            return false;
        }
        self.running = None;
        self.outcome = Some(result);
        self.row = 0;
        self.column = 0;
        true
    }

    /// The fetched rows of the last result.
    pub fn rows(&self) -> usize {
        match &self.outcome {
            Some(Ok(r)) => r.result.rows.len(),
            _ => 0,
        }
    }

    pub fn move_row(&mut self, delta: i64) {
        let n = self.rows() as i64;
        if n > 0 {
            self.row = (self.row as i64).saturating_add(delta).clamp(0, n - 1) as usize;
        }
    }

    pub fn move_column(&mut self, delta: i64) {
        let n = match &self.outcome {
            Some(Ok(r)) => r.result.columns.len() as i64,
            _ => 0,
        };
        if n > 0 {
            self.column = (self.column as i64 + delta).clamp(0, n - 1) as usize;
        }
    }

    /// Shows an older (`-1`) or newer (`1`) query of the history in the editor; past
    /// the newest, the text typed before browsing comes back.
    pub fn browse_history(&mut self, delta: i64) {
        if self.history.is_empty() {
            return;
        }
        let n = self.history.len() as i64;
        let at = match self.history_at {
            Some(at) => at as i64 + delta,
            None if delta < 0 => {
                self.draft = self.editor.text();
                n - 1
            }
            None => return,
        };
        if at >= n {
            self.history_at = None;
            self.editor = Editor::from_text(&std::mem::take(&mut self.draft));
        } else {
            let at = at.max(0) as usize;
            self.history_at = Some(at);
            self.editor = Editor::from_text(&self.history[at]);
        }
    }

    /// Where browsing stands: (1-based entry from the oldest, entries).
    pub fn history_position(&self) -> Option<(usize, usize)> {
        self.history_at.map(|at| (at + 1, self.history.len()))
    }

    /// Empties the editor (the text stays in the history if it ran).
    pub fn clear(&mut self) {
        self.editor = Editor::default();
        self.history_at = None;
        self.focus = Focus::Editor;
    }

    pub fn load_saved(&mut self, index: usize) {
        if let Some(q) = self.saved.get(index) {
            self.editor = Editor::from_text(&q.sql);
            self.history_at = None;
            self.focus = Focus::Editor;
        }
    }

    /// The file name proposed for an export.
    pub fn default_export_name(&self) -> String {
        self.export_dir.join("result.csv").display().to_string()
    }

    /// The export request for the typed name (relative to the store's folder).
    pub fn export_request(&self, name: &str) -> Result<SqlRequest, String> {
        let Some(Ok(done)) = &self.outcome else {
            return Err("no result to export".into());
        };
        let name = name.trim();
        if name.is_empty() {
            return Err("type a file name".into());
        }
        let path = PathBuf::from(name);
        if export_format(&path).is_none() {
            return Err("the name must end in .csv, .tsv, .json or .parquet".into());
        }
        let path = if path.is_absolute() {
            path
        } else {
            self.export_dir.join(path)
        };
        Ok(SqlRequest::Export {
            result: done.result.clone(),
            path,
        })
    }

    /// A key typed into the saved-query picker or the export prompt; `None` when
    /// neither is open.
    pub fn on_prompt_key(&mut self, key: &KeyEvent) -> Option<SqlOutcome> {
        if let Some(at) = self.picker {
            let n = self.saved.len();
            let mut outcome = SqlOutcome::default();
            match key.code {
                KeyCode::Up => self.picker = Some(at.saturating_sub(1)),
                KeyCode::Down => self.picker = Some((at + 1).min(n.saturating_sub(1))),
                KeyCode::Enter => {
                    self.picker = None;
                    self.load_saved(at);
                    if let Some(q) = self.saved.get(at) {
                        outcome = SqlOutcome::say(format!("loaded saved query {}", q.name));
                    }
                }
                KeyCode::Esc => self.picker = None,
                _ => {}
            }
            return Some(outcome);
        }
        let input = self.export_input.as_mut()?;
        let mut outcome = SqlOutcome::default();
        match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => input.push(c),
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Enter => {
                let name = input.clone();
                match self.export_request(&name) {
                    Ok(request) => {
                        self.export_error = None;
                        outcome = SqlOutcome {
                            request: Some(request),
                            ..SqlOutcome::say("exporting…")
                        };
                    }
                    Err(err) => self.export_error = Some(err),
                }
            }
            KeyCode::Esc => {
                self.export_input = None;
                self.export_error = None;
            }
            _ => {}
        }
        Some(outcome)
    }

    /// The view's own actions; `None` for the app's.
    pub fn on_action(&mut self, action: Action) -> Option<SqlOutcome> {
        let mut outcome = SqlOutcome::default();
        match action {
            Action::RunQuery => match self.start() {
                Ok(request) => {
                    if let (Some(file), SqlRequest::Run { sql, .. }) =
                        (&self.history_file, &request)
                    {
                        outcome.remember = Some((file.clone(), sql.clone()));
                    }
                    outcome.message = Some("running…".into());
                    outcome.request = Some(request);
                }
                Err(err) => outcome.message = Some(err),
            },
            Action::CancelQuery => {
                if self.running.is_some() {
                    outcome = SqlOutcome {
                        request: Some(SqlRequest::Cancel),
                        ..SqlOutcome::say("cancelling…")
                    };
                } else {
                    outcome = SqlOutcome::say("no query is running");
                }
            }
            Action::ClearQuery => self.clear(),
            Action::LeaveEditor => self.focus = Focus::Results,
            Action::EditQuery => self.focus = Focus::Editor,
            Action::HistoryPrev => self.browse_history(-1),
            Action::HistoryNext => self.browse_history(1),
            Action::SavedQueries => {
                if self.saved.is_empty() {
                    outcome = SqlOutcome::say("no saved queries");
                } else {
                    self.picker = Some(0);
                }
            }
            Action::Export => {
                if matches!(self.outcome, Some(Ok(_))) {
                    self.export_input = Some(self.default_export_name());
                    self.export_error = None;
                } else {
                    outcome = SqlOutcome::say("no result to export: run a query first");
                }
            }
            Action::ToggleWrite => {
                self.write = !self.write;
                outcome = SqlOutcome::say(if self.write {
                    "writing ON: statements may change the store"
                } else {
                    "read-only again"
                });
            }
            Action::ScrollLeft => self.move_column(-1),
            Action::ScrollRight => self.move_column(1),
            Action::Up => self.move_row(-1),
            Action::Down => self.move_row(1),
            Action::PageUp => self.move_row(-20),
            Action::PageDown => self.move_row(20),
            Action::Top => self.move_row(i64::MIN / 2),
            Action::Bottom => self.move_row(i64::MAX / 2),
            _ => return None,
        }
        Some(outcome)
    }

    /// What the worker answered.
    pub fn on_response(&mut self, response: SqlResponse) -> SqlOutcome {
        match response {
            SqlResponse::Ran {
                id,
                result,
                transaction_open,
            } => {
                let wrote = result.as_ref().is_ok_and(|r| r.wrote);
                self.transaction_open = transaction_open;
                self.quit_confirmed &= transaction_open;
                // The result's title tells the time; the status line stays steady.
                let summary = match &result {
                    Ok(r) if r.truncated => {
                        format!("showing the first {} rows", r.result.rows.len())
                    }
                    Ok(r) => format!(
                        "{} row{}",
                        r.result.rows.len(),
                        if r.result.rows.len() == 1 { "" } else { "s" }
                    ),
                    Err(_) => "the query failed".into(),
                };
                // An answer to a query since replaced changes nothing.
                if self.finish(id, result) {
                    SqlOutcome {
                        store_changed: wrote,
                        ..SqlOutcome::say(summary)
                    }
                } else {
                    SqlOutcome::default()
                }
            }
            SqlResponse::Exported(Ok((path, n))) => {
                self.export_input = None;
                self.export_error = None;
                let cut = match &self.outcome {
                    Some(Ok(r)) if r.truncated => {
                        " (the fetched rows only: `cdwqc sql --out` writes them all)"
                    }
                    _ => "",
                };
                SqlOutcome::say(format!("wrote {n} rows to {}{cut}", path.display()))
            }
            SqlResponse::Exported(Err(err)) => {
                self.export_error = Some(err);
                SqlOutcome::say("export failed")
            }
            SqlResponse::Idle => SqlOutcome::default(),
        }
    }
}

/// What a cell holds in memory, roughly, for the result's byte limit: lists count
/// their elements, blobs and text among them included.
fn cell_bytes(c: &Cell) -> usize {
    16 + match c {
        Cell::Text(t) => t.len(),
        Cell::Blob(b) => b.len(),
        Cell::List(items) => items.iter().map(cell_bytes).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_weighs_what_its_elements_hold() {
        let blobs = Cell::List(vec![Cell::Blob(vec![0; 1000]), Cell::Blob(vec![0; 500])]);
        assert_eq!(cell_bytes(&blobs), 16 + (16 + 1000) + (16 + 500));
        let nested = Cell::List(vec![Cell::List(vec![Cell::Text("abc".into())]), Cell::Null]);
        assert_eq!(cell_bytes(&nested), 16 + (16 + 19) + 16);
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn one_row(wrote: bool) -> SqlResult {
        let result = ResultSet {
            columns: vec!["n".into()],
            rows: vec![vec![Cell::Int(1)]],
        };
        SqlResult::new(result, false, Duration::from_millis(3), wrote)
    }

    #[test]
    fn a_run_is_remembered_before_it_is_sent_and_only_its_own_answer_counts() {
        let history = PathBuf::from("/h/history.sql");
        let mut sql = SqlState::new(Vec::new(), Vec::new(), Some(history.clone()), ".".into());
        assert_eq!(
            sql.on_action(Action::RunQuery),
            Some(SqlOutcome::say("nothing to run: type a query first"))
        );
        sql.editor = Editor::from_text("update images set status = 'ok'");
        let sent = sql.on_action(Action::RunQuery).expect("the view's action");
        let Some(SqlRequest::Run { id, sql: text, .. }) = &sent.request else {
            panic!("{sent:?}");
        };
        let id = *id;
        assert_eq!(sent.remember, Some((history, text.clone())));
        assert_eq!(sent.message.as_deref(), Some("running…"));
        // Another query's answer (a cancelled one's) neither shows nor invalidates.
        let stale = sql.on_response(SqlResponse::Ran {
            transaction_open: false,
            id: id + 1,
            result: Ok(one_row(true)),
        });
        assert_eq!(stale, SqlOutcome::default());
        assert!(sql.running.is_some() && sql.outcome.is_none());
        let done = sql.on_response(SqlResponse::Ran {
            id,
            result: Ok(one_row(true)),
            transaction_open: false,
        });
        assert_eq!(done.message.as_deref(), Some("1 row"));
        assert!(done.store_changed, "a write must refresh the other views");
        assert!(sql.running.is_none());
        assert_eq!(
            sql.on_action(Action::CycleTask),
            None,
            "not the view's action"
        );
    }

    #[test]
    fn the_export_prompt_asks_for_a_file_the_format_is_known_for() {
        let mut sql = SqlState::new(Vec::new(), Vec::new(), None, "/out".into());
        assert_eq!(
            sql.on_prompt_key(&key(KeyCode::Enter)),
            None,
            "no prompt open"
        );
        assert_eq!(
            sql.on_action(Action::Export),
            Some(SqlOutcome::say("no result to export: run a query first"))
        );
        sql.editor = Editor::from_text("select 1");
        let Some(SqlOutcome {
            request: Some(SqlRequest::Run { id, .. }),
            ..
        }) = sql.on_action(Action::RunQuery)
        else {
            panic!("no run");
        };
        sql.on_response(SqlResponse::Ran {
            id,
            result: Ok(one_row(false)),
            transaction_open: false,
        });
        assert_eq!(sql.on_action(Action::Export), Some(SqlOutcome::default()));
        sql.export_input = Some("rows.xyz".into());
        let refused = sql.on_prompt_key(&key(KeyCode::Enter)).expect("prompt");
        assert_eq!(refused.request, None);
        assert!(sql.export_error.is_some() && sql.export_input.is_some());
        sql.export_input = Some("rows.csv".into());
        let sent = sql.on_prompt_key(&key(KeyCode::Enter)).expect("prompt");
        assert!(
            matches!(&sent.request, Some(SqlRequest::Export { path, .. }) if path == Path::new("/out/rows.csv")),
            "{sent:?}"
        );
        let written = sql.on_response(SqlResponse::Exported(Ok(("/out/rows.csv".into(), 1))));
        assert_eq!(
            written.message.as_deref(),
            Some("wrote 1 rows to /out/rows.csv")
        );
        assert_eq!(sql.export_input, None);
    }

    fn typed(editor: &mut Editor, text: &str) {
        for c in text.chars() {
            let code = if c == '\n' {
                KeyCode::Enter
            } else {
                KeyCode::Char(c)
            };
            assert!(editor.edit(&key(code)));
        }
    }

    #[test]
    fn editor_inserts_joins_and_moves() {
        let mut e = Editor::default();
        assert!(e.is_blank());
        typed(&mut e, "select 1\nfrom t");
        assert_eq!(e.text(), "select 1\nfrom t");
        assert_eq!(e.cursor(), (1, 6));
        e.edit(&key(KeyCode::Up));
        assert_eq!(e.cursor(), (0, 6));
        e.edit(&key(KeyCode::End));
        e.edit(&key(KeyCode::Delete));
        assert_eq!(e.text(), "select 1from t");
        typed(&mut e, " ");
        e.edit(&key(KeyCode::Home));
        e.edit(&key(KeyCode::Left));
        assert_eq!(e.cursor(), (0, 0), "left stops at the start");
        e.edit(&key(KeyCode::Down));
        assert_eq!(e.cursor(), (0, 0), "down stops at the last line");
        typed(&mut e, "\n");
        assert_eq!(e.lines(), ["", "select 1 from t"]);
        e.edit(&key(KeyCode::Backspace));
        assert_eq!(e.text(), "select 1 from t");
        e.edit(&key(KeyCode::Backspace));
        assert_eq!(
            e.text(),
            "select 1 from t",
            "backspace at the start does nothing"
        );
        e.edit(&key(KeyCode::End));
        e.edit(&key(KeyCode::Right));
        assert_eq!(e.cursor(), (0, 15));
        e.edit(&key(KeyCode::Tab));
        assert_eq!(e.cursor(), (0, 19));
        let ctrl_r = KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL);
        assert!(!e.edit(&ctrl_r), "control keys are not text");
    }

    #[test]
    fn editor_handles_wide_characters() {
        let mut e = Editor::from_text("select 'é'");
        assert_eq!(e.cursor(), (0, 10));
        e.edit(&key(KeyCode::Left));
        e.edit(&key(KeyCode::Backspace));
        typed(&mut e, "ü");
        assert_eq!(e.text(), "select 'ü'");
        e.edit(&key(KeyCode::Delete));
        assert_eq!(e.text(), "select 'ü");
    }

    #[test]
    fn history_browses_and_restores_the_draft() {
        let mut s = SqlState {
            editor: Editor::from_text("select 1"),
            ..SqlState::default()
        };
        assert!(s.start().is_ok());
        assert!(s.start().is_err(), "one query at a time");
        assert!(s.finish(1, Err("x".into())));
        s.editor = Editor::from_text("select 2");
        s.start().expect("second run");
        s.finish(2, Err("x".into()));
        s.editor = Editor::from_text("select 2");
        s.start().expect("same text again");
        s.finish(3, Err("x".into()));
        assert_eq!(s.history, ["select 1", "select 2"], "repeats are kept once");
        s.editor = Editor::from_text("draft");
        s.browse_history(-1);
        assert_eq!(s.editor.text(), "select 2");
        s.browse_history(-1);
        s.browse_history(-1);
        assert_eq!(s.editor.text(), "select 1");
        assert_eq!(s.history_position(), Some((1, 2)));
        s.browse_history(1);
        s.browse_history(1);
        assert_eq!(s.editor.text(), "draft");
        assert_eq!(s.history_position(), None);
        assert!(
            !s.finish(9, Err("late".into())),
            "an unknown run is ignored"
        );
    }

    #[test]
    fn history_file_round_trips_multi_line_queries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/cdwqc/h.jsonl");
        append_history(&path, "select 1").expect("append");
        append_history(&path, "select 'a\"b'\nfrom t").expect("append");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "not json"))
            .expect("garbage");
        assert_eq!(load_history(&path), ["select 1", "select 'a\"b'\nfrom t"]);
        assert!(load_history(&dir.path().join("none")).is_empty());
    }

    #[test]
    fn the_history_never_writes_into_another_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long: String = (0..2500).map(|i| format!("{i}\tvalue\n")).collect();
        let table = dir.path().join("table.jsonl");
        std::fs::write(&table, &long).expect("write");
        // Named directly: neither cut to the last queries nor appended to.
        assert!(load_history(&table).is_empty());
        assert!(append_history(&table, "select 1").is_err());
        assert_eq!(std::fs::read_to_string(&table).expect("read"), long);
        // A one-column CSV of quoted cells reads as JSON strings: kept by its name.
        let quoted: String = (0..2500).map(|i| format!("\"p{i:04}\"\n")).collect();
        let csv = dir.path().join("ids.csv");
        std::fs::write(&csv, &quoted).expect("write");
        assert!(load_history(&csv).is_empty());
        assert!(append_history(&csv, "select 1").is_err());
        assert_eq!(std::fs::read_to_string(&csv).expect("read"), quoted);
        // A history of many queries planted behind a link, and a second hard link.
        let history: String = (0..2500)
            .map(|i| {
                format!(
                    "{}\n",
                    serde_json::to_string(&format!("select {i}")).expect("json")
                )
            })
            .collect();
        let target = dir.path().join("target.jsonl");
        std::fs::write(&target, &history).expect("write");
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let hard = dir.path().join("hard.jsonl");
        std::fs::hard_link(&target, &hard).expect("hard link");
        for name in [&link, &hard] {
            assert!(load_history(name).is_empty(), "{}", name.display());
            assert!(
                append_history(name, "select 1").is_err(),
                "{}",
                name.display()
            );
        }
        assert_eq!(std::fs::read_to_string(&target).expect("read"), history);
        // The history itself is kept to its last queries, under its own name.
        std::fs::remove_file(&hard).expect("rm");
        let own = dir.path().join("own.jsonl");
        std::fs::copy(&target, &own).expect("copy");
        let kept = load_history(&own);
        assert_eq!(kept.len(), HISTORY_KEEP);
        assert_eq!(kept.last().map(String::as_str), Some("select 2499"));
        assert_eq!(
            std::fs::read_to_string(&own).expect("read").lines().count(),
            HISTORY_KEEP
        );
        assert_eq!(std::fs::read_to_string(&target).expect("read"), history);
    }

    #[test]
    fn saved_queries_have_descriptions_and_files_override() {
        let queries = saved_queries(None);
        assert_eq!(queries.len(), 4);
        let failures = queries
            .iter()
            .find(|q| q.name == "import_failures")
            .expect("import_failures");
        assert_eq!(
            failures.description,
            "Images that could not be indexed, with the reason, newest first."
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mine.sql"), "-- Mine.\nselect 42;\n").expect("w");
        std::fs::write(dir.path().join("import_failures.sql"), "select 0").expect("w");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("w");
        let queries = saved_queries(Some(dir.path()));
        assert_eq!(queries.len(), 5);
        assert_eq!(queries[4].name, "mine");
        assert_eq!(queries[4].description, "Mine.");
        assert!(queries.iter().any(|q| q.sql == "select 0"));
    }

    #[test]
    fn column_widths_fit_content_and_numbers_align_right() {
        let rs = ResultSet {
            columns: vec!["name".into(), "n".into(), "note".into()],
            rows: vec![
                vec![Cell::Text("a".into()), Cell::Int(12345), Cell::Null],
                vec![Cell::Text("x".repeat(100)), Cell::Null, Cell::Null],
            ],
        };
        let r = SqlResult::new(rs, false, Duration::ZERO, false);
        assert_eq!(r.widths, [MAX_COLUMN_WIDTH, 5, 4]);
        assert_eq!(r.numeric, [false, true, false]);
    }

    #[test]
    fn formats_elapsed_times() {
        assert_eq!(format_elapsed(Duration::from_millis(12)), "12 ms");
        assert_eq!(format_elapsed(Duration::from_millis(1340)), "1.3 s");
        assert_eq!(format_elapsed(Duration::from_secs(125)), "2 min 5 s");
    }

    #[test]
    fn export_needs_a_known_extension_and_a_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rs = ResultSet {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Cell::Int(1), Cell::Null],
                vec![Cell::Int(2), Cell::Text("x".into())],
            ],
        };
        let csv = dir.path().join("r.csv");
        assert_eq!(export(&rs, &csv), Ok(2));
        assert_eq!(
            std::fs::read_to_string(&csv).expect("csv"),
            "a,b\n1,\n2,x\n"
        );
        assert!(export(&rs, &csv).is_err(), "never overwrites");
        assert!(export(&rs, &dir.path().join("r.xlsx")).is_err());
        let parquet = dir.path().join("r.parquet");
        assert_eq!(export(&rs, &parquet), Ok(2));
        let conn = Connection::open_in_memory().expect("duckdb");
        let n: i64 = conn
            .query_row(
                &format!("SELECT sum(a) FROM '{}'", parquet.display()),
                [],
                |r| r.get(0),
            )
            .expect("read back");
        assert_eq!(n, 3);
    }
}
