//! Rating files: parsing native, notebook and MRIQC-style tables into plain rows, and
//! writing native and notebook files.
//!
//! Parsing never panics: a problem with the whole file (unreadable, no header, missing
//! or duplicated column, unknown or ambiguous format) is a [`FormatError`]; a problem
//! with one row becomes an [`InvalidRow`] with its line number and the other rows are
//! kept.
//!
//! # Missing values
//! In every format a cell that is empty, `n/a` or `NA` (any case, spaces around
//! ignored; see [`is_missing`]) is a missing value, as MRIQC, BIDS and R write them. A
//! missing rating means "this rater gave no rating for this image": the row (or, in
//! MRIQC tables, the cell) gives no rating and is no error either; the count is kept
//! in [`ParsedFile::missing`]. A row that leaves its rating missing but fills other
//! rating cells contradicts itself and is invalid.
//!
//! # Delimiter
//! A header holding tabs but no commas is tab-separated, commas but no tabs is
//! comma-separated; otherwise the extension decides (`.tsv`/`.txt` tab, `.csv` comma),
//! and failing that the more frequent of the two characters in the header.
//!
//! # Native format (`native`)
//! Header names are matched case-insensitively. Image key: a non-empty `path` (or
//! `filename`, the BIDS-derivatives export's name for it), else the
//! BIDS entities `subject` (with or without `sub-`), `session`, `acq`, `run`, `suffix`
//! (prefixes `ses-`, `acq-`, `run-` are stripped too). Protocol: either the explicit
//! columns `usable, reject_reason, gado, motion, contrast, noise` (explicit columns win
//! when both are present) or a `code` column (plus an optional `reject_reason` for
//! `r`). `code`, `tier` and `quality`, when present and non-empty, must agree with the
//! rating. Optional: `rater`, `comment`, `confidence` (1-5), `time_ms`, `rated_at`
//! (RFC 3339). Cells are trimmed except `comment`, which is kept verbatim; a blank
//! comment reads as none. For a reject, `gado` and grades must be empty, `0` or `false`.
//! A usable row with `gado`, `motion`, `contrast` and `noise` all empty and a
//! `quality` is a quality-only rating (see [`ParsedRow::grades_known`]).
//!
//! A row is unrated when its rating is missing: with explicit columns, `usable` and
//! every other rating column (`reject_reason`, `gado`, grades, `code`, `tier`,
//! `quality`) missing; with a code column, `code`, `reject_reason`, `tier` and
//! `quality` missing. An empty code next to `tier` 1 or `quality` good is a good
//! usable image (the notebook's empty code); alone it is a missing rating.
//!
//! # Notebook format (`notebook`)
//! The authors' notebook saves a pandas DataFrame with its index:
//! `index | img_id | code | label`, tab- or comma-separated; the index column may be
//! named `index`, `Unnamed: 0` or nothing, or be absent. `img_id` is a BIDS name such as
//! `sub-XXX_ses-YYY` or a file stem; `label` is the tier number (1-4, `2.0` accepted)
//! and must match the code, else the row is invalid. An empty (or `n/a`) code with a
//! label is a good usable image; a row whose label and code are both missing is
//! unrated. The rater is not in the file (one file per rater).
//!
//! # MRIQC-style tables (`mriqc`)
//! One column per rater, named `rater_<id>` or `rater<digits>`, holding `-1` exclude,
//! `0` doubtful, `1` accept (`-1.0` style accepted); a missing cell (empty, `n/a`,
//! `NA`) means that rater did not rate the image. Image key: `bids_name`, else
//! `subject_id` with the optional `session_id`, `acq_id`, `run_id`. Each non-missing
//! cell gives one row whose `rater` is the column name. Mapping to the protocol:
//! - `1` accept -> usable, quality good;
//! - `0` doubtful -> usable, quality medium;
//! - `-1` exclude -> by default reject with reason `other` (MRIQC's exclude means "not
//!   usable for analysis", which is what `usable = false` records); with
//!   [`MriqcExclude::Bad`] -> usable, quality bad instead, for tables whose excluded
//!   images are proper scans with severe artefacts.
//!
//! MRIQC gives no per-artefact grades and no gadolinium flag. The protocol types have
//! no "unknown" grade, so such rows are quality-only ratings: `grades_known = false`,
//! `gado = false`, and all three grades set to the grade of the quality class
//! (none/moderate/severe) so that `tier()` and `quality()` are right. The store must
//! write NULL for gado, motion, contrast and noise of such rows and keep only
//! `usable`, `reject_reason` and `quality`; per-artefact statistics skip them.
//!
//! # BIDS names
//! A name `sub-<s>[_ses-<x>][_acq-<x>][_run-<x>][_<suffix>]` (an extension `.nii`,
//! `.nii.gz` or `.json` is dropped) becomes [`ImageKey::Bids`]; any other name,
//! including one with other entities, is kept whole as [`ImageKey::Path`], which the
//! store matches against file paths and stems.

use crate::protocol::{Grade, ProtocolError, Quality, Rating, RejectReason, Tier, Usability};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The supported rating file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFormat {
    Native,
    Notebook,
    Mriqc,
    /// MRIQC's rating widget: one JSON file per image (see `rate::external`).
    MriqcJson,
    /// fetMRQC's merged ratings CSV (`qc_ratings_to_csv`; see `rate::external`).
    Fetmrqc,
}

impl FileFormat {
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Native => "native",
            FileFormat::Notebook => "notebook",
            FileFormat::Mriqc => "mriqc",
            FileFormat::MriqcJson => "mriqc-json",
            FileFormat::Fetmrqc => "fetmrqc",
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileFormat {
    type Err = FormatError;
    /// Accepts `native`, `notebook`, `mriqc`; `auto` is `None` in [`ParseOptions`].
    fn from_str(text: &str) -> Result<FileFormat, FormatError> {
        match text.trim() {
            "native" => Ok(FileFormat::Native),
            "notebook" => Ok(FileFormat::Notebook),
            "mriqc" => Ok(FileFormat::Mriqc),
            "mriqc-json" => Ok(FileFormat::MriqcJson),
            "fetmrqc" => Ok(FileFormat::Fetmrqc),
            other => Err(FormatError::UnknownFormatName(other.to_string())),
        }
    }
}

/// Field separator of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    Tab,
    Comma,
}

impl Delimiter {
    fn byte(self) -> u8 {
        match self {
            Delimiter::Tab => b'\t',
            Delimiter::Comma => b',',
        }
    }

    /// Tab for `.tsv`/`.txt`, comma for `.csv`, none for other names.
    pub fn from_extension(name: &str) -> Option<Delimiter> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tsv") || lower.ends_with(".txt") {
            Some(Delimiter::Tab)
        } else if lower.ends_with(".csv") {
            Some(Delimiter::Comma)
        } else {
            None
        }
    }

    /// Sniffs the delimiter from the header line, then the extension; see the module
    /// documentation.
    pub fn sniff(header_line: &str, source_name: &str) -> Delimiter {
        let tabs = header_line.matches('\t').count();
        let commas = header_line.matches(',').count();
        match (tabs > 0, commas > 0) {
            (true, false) => Delimiter::Tab,
            (false, true) => Delimiter::Comma,
            _ => Delimiter::from_extension(source_name).unwrap_or(if commas > tabs {
                Delimiter::Comma
            } else {
                Delimiter::Tab
            }),
        }
    }
}

/// BIDS entities that identify an image; values without their `sub-`/`ses-`/...
/// prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BidsKey {
    pub subject: String,
    pub session: Option<String>,
    pub acq: Option<String>,
    pub run: Option<String>,
    pub suffix: Option<String>,
}

impl BidsKey {
    /// Parses `sub-<s>[_ses-<x>][_acq-<x>][_run-<x>][_<suffix>]`, entities in this
    /// order, an extension dropped; `None` for anything else.
    pub fn from_name(name: &str) -> Option<BidsKey> {
        let name = name.trim();
        let base = Path::new(name).file_name()?.to_str()?;
        let stem = [".nii.gz", ".nii", ".json"]
            .iter()
            .find_map(|ext| base.strip_suffix(ext))
            .unwrap_or(base);
        let parts: Vec<&str> = stem.split('_').collect();
        let valid = |value: &str| !value.is_empty() && !value.contains('-');
        let subject = parts[0].strip_prefix("sub-").filter(|s| valid(s))?;
        let mut key = BidsKey {
            subject: subject.to_string(),
            session: None,
            acq: None,
            run: None,
            suffix: None,
        };
        let mut rest = &parts[1..];
        for (prefix, slot) in [
            ("ses-", &mut key.session),
            ("acq-", &mut key.acq),
            ("run-", &mut key.run),
        ] {
            if let Some(value) = rest.first().and_then(|part| part.strip_prefix(prefix)) {
                if !valid(value) {
                    return None;
                }
                *slot = Some(value.to_string());
                rest = &rest[1..];
            }
        }
        match rest {
            [] => {}
            [suffix] if valid(suffix) => key.suffix = Some(suffix.to_string()),
            _ => return None,
        }
        Some(key)
    }

    /// The BIDS name, e.g. `sub-01_ses-M000_acq-3d_run-1_FLAIR`.
    pub fn name(&self) -> String {
        let mut name = format!("sub-{}", self.subject);
        for (prefix, value) in [
            ("ses-", &self.session),
            ("acq-", &self.acq),
            ("run-", &self.run),
        ] {
            if let Some(value) = value {
                name.push('_');
                name.push_str(prefix);
                name.push_str(value);
            }
        }
        if let Some(suffix) = &self.suffix {
            name.push('_');
            name.push_str(suffix);
        }
        name
    }
}

/// How a rating file names its image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageKey {
    Bids(BidsKey),
    /// A file path or stem, as written in the file.
    Path(String),
}

impl ImageKey {
    /// A BIDS key when `name` is a BIDS name, else the name as a path.
    pub fn from_name(name: &str) -> ImageKey {
        BidsKey::from_name(name)
            .map(ImageKey::Bids)
            .unwrap_or_else(|| ImageKey::Path(name.trim().to_string()))
    }

    /// The BIDS name or the path.
    pub fn name(&self) -> String {
        match self {
            ImageKey::Bids(key) => key.name(),
            ImageKey::Path(path) => path.clone(),
        }
    }
}

/// One rating read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRow {
    /// 1-based line of the row in the file (the header is line 1).
    pub line: usize,
    pub key: ImageKey,
    pub rating: Rating,
    /// `false` for quality-only ratings (MRIQC tables, native rows with only a
    /// quality): `gado` and the grades are then placeholders that carry the quality
    /// class and must be stored as unknown.
    pub grades_known: bool,
    pub comment: Option<String>,
    /// Rater's confidence, 1-5.
    pub confidence: Option<u8>,
    pub time_ms: Option<u64>,
    /// RFC 3339 timestamp as written in the file.
    pub rated_at: Option<String>,
    pub rater: Option<String>,
}

impl ParsedRow {
    /// A row with only a key and a full rating.
    pub fn new(line: usize, key: ImageKey, rating: Rating) -> ParsedRow {
        ParsedRow {
            line,
            key,
            rating,
            grades_known: true,
            comment: None,
            confidence: None,
            time_ms: None,
            rated_at: None,
            rater: None,
        }
    }
}

/// A row that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    pub line: usize,
    pub message: String,
}

/// Everything read from one rating file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFile {
    pub format: FileFormat,
    pub delimiter: Delimiter,
    pub rows: Vec<ParsedRow>,
    pub invalid: Vec<InvalidRow>,
    /// Ratings left missing (empty, `n/a`, `NA`): unrated rows, or unrated cells of
    /// MRIQC rater columns. Neither a rating nor an error.
    pub missing: usize,
    /// Rows of a history export (`rating_id` and `undoes` columns) that an undo in the
    /// same file withdrew, undos included: they are not saved, so that the ratings in
    /// force are those the history ended with.
    pub withdrawn: usize,
}

/// The markers of a missing value, compared without case after trimming.
pub const MISSING_MARKERS: [&str; 3] = ["", "n/a", "na"];

/// Whether a cell holds a missing value: empty, `n/a` or `NA` (any case, trimmed).
pub fn is_missing(cell: &str) -> bool {
    let cell = cell.trim();
    MISSING_MARKERS
        .iter()
        .any(|marker| cell.eq_ignore_ascii_case(marker))
}

/// What one data line of a file gives.
enum RowOutcome {
    /// Ratings, and how many rating cells of the line were missing.
    Rated(Vec<ParsedRow>, usize),
    /// No rating at all: the line's rating is missing.
    Unrated,
}

/// What an MRIQC `-1` (exclude) becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MriqcExclude {
    /// Reject with reason `other`.
    #[default]
    Reject,
    /// Usable, quality bad.
    Bad,
}

/// Parsing choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// `None` detects the format from the header.
    pub format: Option<FileFormat>,
    pub mriqc_exclude: MriqcExclude,
}

/// Problems with a whole rating file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read rating file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("rating file {source_name}: {message}")]
    Encoding {
        source_name: String,
        message: String,
    },
    #[error("rating file {source_name} is empty: no header line")]
    Empty { source_name: String },
    #[error("rating file {source_name}: unreadable header: {message}")]
    Header {
        source_name: String,
        message: String,
    },
    #[error("rating file {source_name}: column '{column}' appears twice in the header")]
    DuplicateColumn { source_name: String, column: String },
    #[error(
        "rating file {source_name}: the {format} format needs column {column}; header is: {header}"
    )]
    MissingColumn {
        source_name: String,
        format: FileFormat,
        column: String,
        header: String,
    },
    #[error(
        "rating file {source_name}: unrecognised header ({header}); expected native (subject or path, with code or usable), notebook (img_id, code, label) or mriqc (bids_name or subject_id, with rater_* columns)"
    )]
    UnknownFormat { source_name: String, header: String },
    #[error(
        "rating file {source_name}: header ({header}) fits several formats ({candidates}); choose one with --format"
    )]
    Ambiguous {
        source_name: String,
        header: String,
        candidates: String,
    },
    #[error(
        "unknown rating file format '{0}': expected auto, native, notebook, mriqc, mriqc-json or fetmrqc"
    )]
    UnknownFormatName(String),
    #[error("cannot write row {index} ({image}) in the {format} format: {reason}")]
    NotExpressible {
        index: usize,
        image: String,
        format: FileFormat,
        reason: String,
    },
    #[error("cannot write rating table: {0}")]
    Write(String),
}

/// Reads and parses a rating file.
pub fn read_ratings_file(path: &Path, options: &ParseOptions) -> Result<ParsedFile, FormatError> {
    let bytes = std::fs::read(path).map_err(|source| FormatError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_ratings_bytes(&bytes, path, options)
}

/// [`read_ratings_file`] of bytes already read from `path`: an import hashes and parses
/// the very bytes it read once, so a file rewritten meanwhile cannot have its rows saved
/// under another content's identity.
pub fn parse_ratings_bytes(
    bytes: &[u8],
    path: &Path,
    options: &ParseOptions,
) -> Result<ParsedFile, FormatError> {
    let text = decode_text(bytes, &path.display().to_string())?;
    parse_ratings(&text, &path.display().to_string(), options)
}

/// A rating file's text: UTF-8 (with or without its byte-order mark), or UTF-16 with
/// its mark (what spreadsheets save as "Unicode text"). Other bytes (Latin-1 or
/// Windows-1252 from an older spreadsheet) are refused, naming the line, rather than
/// read with their accents replaced.
pub fn decode_text<'a>(
    bytes: &'a [u8],
    source_name: &str,
) -> Result<std::borrow::Cow<'a, str>, FormatError> {
    let encoding = |message: String| FormatError::Encoding {
        source_name: source_name.to_string(),
        message,
    };
    let utf16 = |bytes: &[u8], little: bool| {
        let units = bytes.chunks(2).map(|pair| match (pair, little) {
            ([a, b], true) => u16::from_le_bytes([*a, *b]),
            ([a, b], false) => u16::from_be_bytes([*a, *b]),
            _ => 0xDC00, // an odd last byte: a lone surrogate, refused below
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(std::borrow::Cow::Owned)
            .map_err(|_| {
                encoding("not valid UTF-16 text although it starts with UTF-16's mark".into())
            })
    };
    match bytes {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        _ => std::str::from_utf8(bytes)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|e| {
                let at = e.valid_up_to();
                let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
                encoding(format!(
                    "line {line} is not UTF-8 text (byte 0x{:02X}; Latin-1 or Windows-1252?): save the file as UTF-8 (in a spreadsheet, \"CSV UTF-8\" or \"Unicode text\")",
                    bytes[at]
                ))
            }),
    }
}

/// Parses the text of a rating file; `source_name` (a path or `<stdin>`) is used in
/// messages and for the delimiter's extension fallback.
pub fn parse_ratings(
    text: &str,
    source_name: &str,
    options: &ParseOptions,
) -> Result<ParsedFile, FormatError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The csv reader numbers CRLF lines one short and never counts a lone CR, so every
    // line break becomes LF first: problems are then reported on the lines an editor shows.
    let text = if text.contains('\r') {
        std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    let text = text.as_ref();
    let Some(header_line) = text.lines().find(|line| !line.trim().is_empty()) else {
        return Err(FormatError::Empty {
            source_name: source_name.to_string(),
        });
    };
    let delimiter = Delimiter::sniff(header_line, source_name);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter.byte())
        .from_reader(text.as_bytes());
    let runaways = runaway_quotes(text, delimiter);
    let mut records = reader.records();
    let header: Vec<String> = match records.next() {
        Some(Ok(record)) => record.iter().map(|name| name.trim().to_string()).collect(),
        Some(Err(error)) => {
            return Err(FormatError::Header {
                source_name: source_name.to_string(),
                message: error.to_string(),
            });
        }
        None => {
            return Err(FormatError::Empty {
                source_name: source_name.to_string(),
            });
        }
    };
    let columns = Columns::new(&header, source_name)?;
    let format = match options.format {
        Some(format) => format,
        None => detect_format(&columns, source_name)?,
    };
    let layout = Layout::new(format, &columns, source_name)?;
    let mut parsed = ParsedFile {
        format,
        delimiter,
        rows: Vec::new(),
        invalid: Vec::new(),
        missing: 0,
        withdrawn: 0,
    };
    // A history export (`ratings export --history`) holds each save and each undo; an
    // undo row names the save it withdrew. Both are left out: saving the withdrawn
    // rating brought it back in force.
    let history = columns.has("rating_id") && columns.has("undoes");
    // Keyed by rater too: histories of two stores put end to end number their saves
    // from 1 each, and an undo of one rater's save 1 withdrew the other's.
    let mut lines_of_id: HashMap<(Option<String>, String), Vec<usize>> = HashMap::new();
    let mut undos: Vec<(usize, (Option<String>, String))> = Vec::new();
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, |pos| pos.line() as usize);
                parsed.invalid.push(InvalidRow {
                    line,
                    message: format!("unreadable row: {error}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |pos| pos.line() as usize);
        // The runaway may start on a later line of this record, after a value that spans
        // lines properly.
        let spans = record
            .iter()
            .map(|v| v.matches('\n').count())
            .sum::<usize>();
        if let Some(last) = (line..=line + spans).find_map(|l| runaways.get(&l)) {
            parsed.invalid.push(InvalidRow {
                line,
                message: format!(
                    "a quote opened in this row is not closed on its line, so lines {line}-{last} \
                     read as one value and their rows would be lost: close the quote, or \
                     double a quote inside a value (\"\")"
                ),
            });
            continue;
        }
        if record.iter().all(is_missing) {
            continue;
        }
        if record.len() != header.len() {
            parsed.invalid.push(InvalidRow {
                line,
                message: format!(
                    "expected {} fields as in the header, found {}",
                    header.len(),
                    record.len()
                ),
            });
            continue;
        }
        let cells = Cells {
            record: &record,
            columns: &columns,
        };
        if history {
            let rater = cells.get("rater").map(|r| r.trim().to_string());
            if let Some(undone) = cells.get("undoes") {
                undos.push((line, (rater, undone.trim().to_string())));
                continue;
            }
            if let Some(id) = cells.get("rating_id") {
                lines_of_id
                    .entry((rater, id.trim().to_string()))
                    .or_default()
                    .push(line);
            }
        }
        match layout.parse_row(&cells, line, options) {
            Ok(RowOutcome::Rated(rows, missing)) => {
                parsed.rows.extend(rows);
                parsed.missing += missing;
            }
            Ok(RowOutcome::Unrated) => parsed.missing += 1,
            Err(message) => parsed.invalid.push(InvalidRow { line, message }),
        }
    }
    withdraw_undone(&mut parsed, &lines_of_id, &undos);
    Ok(parsed)
}

/// Leaves out of `parsed` each save an undo row withdrew, and the undo; an undo of a
/// save the file does not hold is an invalid row (a part of a history, whose saves
/// are elsewhere, cannot say what was in force).
fn withdraw_undone(
    parsed: &mut ParsedFile,
    lines_of_id: &HashMap<(Option<String>, String), Vec<usize>>,
    undos: &[(usize, (Option<String>, String))],
) {
    for (line, key) in undos {
        let undone = &key.1;
        let whose = key
            .0
            .as_deref()
            .map(|r| format!(" of rater {r}"))
            .unwrap_or_default();
        match lines_of_id.get(key).map(Vec::as_slice) {
            Some(&[saved]) => {
                let before = parsed.rows.len() + parsed.invalid.len();
                parsed.rows.retain(|r| r.line != saved);
                parsed.invalid.retain(|r| r.line != saved);
                parsed.withdrawn += 1 + before - parsed.rows.len() - parsed.invalid.len();
            }
            Some(lines) if lines.len() > 1 => parsed.invalid.push(InvalidRow {
                line: *line,
                message: format!(
                    "undoes rating {undone}{whose}, which this file holds {} times (lines \
                     {}): the save it withdraws is unclear (histories put end to end?)",
                    lines.len(),
                    lines
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            _ => parsed.invalid.push(InvalidRow {
                line: *line,
                message: format!(
                    "undoes rating {undone}{whose}, which this file does not hold: import \
                     the whole history, or the ratings in force (`cdwqc ratings export \
                     --latest`)"
                ),
            }),
        }
    }
    parsed.invalid.sort_by_key(|r| r.line);
}

/// Quoted values that run over a line break and are not closed as a quoted value must
/// be (by a quote followed by the delimiter, the line's end or the file's end): the
/// reader then took the rows after them as text. By the line a value starts on, the
/// line the damage ends on. A quote inside a value that does not start with one is
/// text, as the reader takes it; a quoted value closed properly may span lines (a
/// comment written with a line break).
fn runaway_quotes(text: &str, delimiter: Delimiter) -> HashMap<usize, usize> {
    let delimiter = char::from(delimiter.byte());
    let mut found = HashMap::new();
    let mut line = 1;
    let mut at_field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if at_field_start && c == '"' {
            let start = line;
            let mut last = line;
            let mut closed_well = false;
            let mut closed = false;
            while let Some(q) = chars.next() {
                if q == '\n' {
                    line += 1;
                    continue;
                }
                last = line;
                if q == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        continue;
                    }
                    closed = true;
                    closed_well = matches!(chars.peek(), None | Some('\n'))
                        || chars.peek() == Some(&delimiter);
                    break;
                }
            }
            if last > start && !(closed && closed_well) {
                found.insert(start, last);
            }
            at_field_start = false;
            continue;
        }
        match c {
            '\n' => {
                line += 1;
                at_field_start = true;
            }
            c if c == delimiter => at_field_start = true,
            _ => at_field_start = false,
        }
    }
    found
}

/// Header column positions by lowercase name.
struct Columns {
    index: HashMap<String, usize>,
    names: Vec<String>,
}

impl Columns {
    fn new(header: &[String], source_name: &str) -> Result<Columns, FormatError> {
        let mut index = HashMap::new();
        for (position, name) in header.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            if lower.is_empty() && position == 0 {
                continue;
            }
            if index.insert(lower, position).is_some() {
                return Err(FormatError::DuplicateColumn {
                    source_name: source_name.to_string(),
                    column: name.clone(),
                });
            }
        }
        Ok(Columns {
            index,
            names: header.to_vec(),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn header(&self) -> String {
        self.names.join(", ")
    }

    /// MRIQC rater columns: `rater_<id>` or `rater<digits>`, in header order.
    fn rater_columns(&self) -> Vec<(usize, String)> {
        self.names
            .iter()
            .enumerate()
            .filter(|(_, name)| {
                let lower = name.to_ascii_lowercase();
                lower.strip_prefix("rater").is_some_and(|rest| {
                    rest.strip_prefix('_').is_some_and(|id| !id.is_empty())
                        || (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
                })
            })
            .map(|(position, name)| (position, name.clone()))
            .collect()
    }
}

fn detect_format(columns: &Columns, source_name: &str) -> Result<FileFormat, FormatError> {
    let mut candidates = Vec::new();
    if (columns.has("subject") || columns.has("path") || columns.has("filename"))
        && (columns.has("code") || columns.has("usable"))
    {
        candidates.push(FileFormat::Native);
    }
    if columns.has("img_id") && columns.has("code") {
        candidates.push(FileFormat::Notebook);
    }
    if (columns.has("bids_name") || columns.has("subject_id"))
        && !columns.rater_columns().is_empty()
    {
        candidates.push(FileFormat::Mriqc);
    }
    if columns.has("rating") && (columns.has("rating_text") || columns.has("fetal_motion")) {
        candidates.push(FileFormat::Fetmrqc);
    }
    match candidates[..] {
        [single] => Ok(single),
        [] => Err(FormatError::UnknownFormat {
            source_name: source_name.to_string(),
            header: columns.header(),
        }),
        _ => Err(FormatError::Ambiguous {
            source_name: source_name.to_string(),
            header: columns.header(),
            candidates: candidates
                .iter()
                .map(|format| format.name())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The cells of one record, looked up by column name; absent columns and missing
/// values (see [`is_missing`]) read as `None`.
struct Cells<'a> {
    record: &'a csv::StringRecord,
    columns: &'a Columns,
}

impl Cells<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let position = self.columns.get(name)?;
        self.at(position)
    }

    /// The cell verbatim (free text keeps its spaces); `None` when missing.
    fn raw(&self, name: &str) -> Option<&str> {
        let cell = self.record.get(self.columns.get(name)?)?;
        (!is_missing(cell)).then_some(cell)
    }

    fn at(&self, position: usize) -> Option<&str> {
        let cell = self.record.get(position)?.trim();
        (!is_missing(cell)).then_some(cell)
    }

    /// The first of `names` whose cell holds a value.
    fn first_given<'n>(&self, names: &[&'n str]) -> Option<&'n str> {
        names.iter().copied().find(|name| self.get(name).is_some())
    }
}

/// Which columns a format reads, checked once against the header.
enum Layout {
    Native { explicit: bool },
    Notebook,
    Mriqc { raters: Vec<(usize, String)> },
    Fetmrqc,
}

impl Layout {
    fn new(
        format: FileFormat,
        columns: &Columns,
        source_name: &str,
    ) -> Result<Layout, FormatError> {
        let missing = |column: &str| FormatError::MissingColumn {
            source_name: source_name.to_string(),
            format,
            column: column.to_string(),
            header: columns.header(),
        };
        match format {
            FileFormat::Native => {
                if !columns.has("subject") && !columns.has("path") && !columns.has("filename") {
                    return Err(missing("subject or path"));
                }
                if !columns.has("code") && !columns.has("usable") {
                    return Err(missing("code or usable"));
                }
                Ok(Layout::Native {
                    explicit: columns.has("usable"),
                })
            }
            FileFormat::Notebook => {
                for column in ["img_id", "code", "label"] {
                    if !columns.has(column) {
                        return Err(missing(column));
                    }
                }
                Ok(Layout::Notebook)
            }
            FileFormat::Mriqc => {
                if !columns.has("bids_name") && !columns.has("subject_id") {
                    return Err(missing("bids_name or subject_id"));
                }
                let raters = columns.rater_columns();
                if raters.is_empty() {
                    return Err(missing("rater_<id>"));
                }
                Ok(Layout::Mriqc { raters })
            }
            FileFormat::Fetmrqc => {
                if !columns.has("rating") {
                    return Err(missing("rating"));
                }
                if !columns.has("im") && !columns.has("sub") {
                    return Err(missing("im or sub"));
                }
                Ok(Layout::Fetmrqc)
            }
            FileFormat::MriqcJson => Err(FormatError::Header {
                source_name: source_name.to_string(),
                message: "mriqc-json files are JSON, one per image, not a table".into(),
            }),
        }
    }

    fn parse_row(
        &self,
        cells: &Cells<'_>,
        line: usize,
        options: &ParseOptions,
    ) -> Result<RowOutcome, String> {
        let single = |row: Option<ParsedRow>| match row {
            Some(row) => RowOutcome::Rated(vec![row], 0),
            None => RowOutcome::Unrated,
        };
        match self {
            Layout::Native { explicit } => parse_native_row(cells, line, *explicit).map(single),
            Layout::Notebook => parse_notebook_row(cells, line).map(single),
            Layout::Mriqc { raters } => parse_mriqc_row(cells, line, raters, options.mriqc_exclude),
            Layout::Fetmrqc => parse_fetmrqc_row(cells, line, options.mriqc_exclude).map(single),
        }
    }
}

fn strip_entity<'a>(value: &'a str, prefix: &str) -> &'a str {
    value.strip_prefix(prefix).unwrap_or(value)
}

fn bids_from_columns(cells: &Cells<'_>, names: [&str; 5]) -> Option<BidsKey> {
    let [subject, session, acq, run, suffix] = names;
    let subject = strip_entity(cells.get(subject)?, "sub-").to_string();
    Some(BidsKey {
        subject,
        session: cells
            .get(session)
            .map(|v| strip_entity(v, "ses-").to_string()),
        acq: cells.get(acq).map(|v| strip_entity(v, "acq-").to_string()),
        run: cells.get(run).map(|v| strip_entity(v, "run-").to_string()),
        suffix: cells.get(suffix).map(str::to_string),
    })
}

fn parse_bool(column: &str, text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "t" => Ok(true),
        "false" | "0" | "no" | "n" | "f" => Ok(false),
        _ => Err(format!(
            "{column}: '{text}' is not a boolean (true/false, 1/0, yes/no)"
        )),
    }
}

fn protocol_message(error: ProtocolError) -> String {
    error.to_string()
}

/// The rating columns of native rows besides `usable` and `code`.
const OTHER_RATING_COLUMNS: [&str; 7] = [
    "reject_reason",
    "gado",
    "motion",
    "contrast",
    "noise",
    "tier",
    "quality",
];

/// Reads the explicit protocol columns of a native row; `None` when the rating is
/// missing.
fn explicit_rating(cells: &Cells<'_>) -> Result<Option<(Rating, bool)>, String> {
    let Some(usable_text) = cells.get("usable") else {
        return match cells
            .first_given(&OTHER_RATING_COLUMNS)
            .or_else(|| cells.get("code").map(|_| "code"))
        {
            None => Ok(None),
            Some(column) => Err(format!(
                "usable is missing while {column} is given (leave every rating cell empty or n/a for an unrated image)"
            )),
        };
    };
    let usable = parse_bool("usable", usable_text)?;
    let reason = cells
        .get("reject_reason")
        .map(RejectReason::from_str)
        .transpose()
        .map_err(protocol_message)?;
    let gado = cells
        .get("gado")
        .map(|text| parse_bool("gado", text))
        .transpose()?;
    let grade = |column: &str| -> Result<Option<Grade>, String> {
        cells
            .get(column)
            .map(|text| text.parse::<Grade>().map_err(|e| format!("{column}: {e}")))
            .transpose()
    };
    let grades = [grade("motion")?, grade("contrast")?, grade("noise")?];
    if !usable {
        if gado == Some(true) || grades.iter().flatten().any(|&g| g != Grade::None) {
            return Err(
                "a rejected image carries no gado flag or grade (leave them empty)".to_string(),
            );
        }
        return Ok(Some((
            Rating::reject(reason.unwrap_or(RejectReason::Other)),
            true,
        )));
    }
    if let Some(reason) = reason {
        return Err(format!("usable image with reject reason '{reason}'"));
    }
    if gado.is_none()
        && grades.iter().all(Option::is_none)
        && let Some(quality) = cells.get("quality")
    {
        let quality: Quality = quality.parse().map_err(protocol_message)?;
        return Ok(Some((quality_only(quality), false)));
    }
    let named = ["motion", "contrast", "noise"];
    let mut values = [Grade::None; 3];
    for ((value, grade), name) in values.iter_mut().zip(grades).zip(named) {
        *value = grade.ok_or_else(|| format!("{name} is empty"))?;
    }
    let [motion, contrast, noise] = values;
    Ok(Some((
        Rating::usable(gado.unwrap_or(false), motion, contrast, noise),
        true,
    )))
}

/// Checks the derived `code`, `tier`, `quality` (and, for notebooks, `label`) cells
/// against the rating.
fn check_derived(cells: &Cells<'_>, rating: &Rating, grades_known: bool) -> Result<(), String> {
    if grades_known && let Some(code) = cells.get("code") {
        let from_code = Rating::from_code(code).map_err(protocol_message)?;
        if from_code.code() != rating.code() {
            return Err(format!(
                "code '{code}' does not match the rating columns (code '{}')",
                rating.code()
            ));
        }
    }
    for column in ["tier", "label"] {
        if let Some(text) = cells.get(column) {
            let tier =
                parse_tier(text).ok_or_else(|| format!("{column}: '{text}' is not a tier 1-4"))?;
            if tier != rating.tier() {
                return Err(format!(
                    "{column} {text} does not match code '{}' (tier {})",
                    rating.code(),
                    rating.tier()
                ));
            }
        }
    }
    if let Some(text) = cells.get("quality") {
        let quality: Quality = text.parse().map_err(protocol_message)?;
        if Some(quality) != rating.quality() {
            return Err(format!(
                "quality '{quality}' does not match code '{}'",
                rating.code()
            ));
        }
    }
    Ok(())
}

/// A tier number as pandas may write it: `2` or `2.0`.
fn parse_tier(text: &str) -> Option<Tier> {
    let integral = text.strip_suffix(".0").unwrap_or(text);
    Tier::from_number(integral.parse().ok()?)
}

/// One native row; `None` when its rating is missing.
fn parse_native_row(
    cells: &Cells<'_>,
    line: usize,
    explicit: bool,
) -> Result<Option<ParsedRow>, String> {
    let key = match cells.get("path").or_else(|| cells.get("filename")) {
        Some(path) => ImageKey::Path(path.to_string()),
        None => ImageKey::Bids(
            bids_from_columns(cells, ["subject", "session", "acq", "run", "suffix"])
                .ok_or("no image key: subject and path are both empty")?,
        ),
    };
    let (rating, grades_known) = if explicit {
        match explicit_rating(cells)? {
            Some(rating) => rating,
            None => return Ok(None),
        }
    } else {
        if cells.get("code").is_none()
            && cells
                .first_given(&["reject_reason", "tier", "quality"])
                .is_none()
        {
            return Ok(None);
        }
        let code = cells.get("code").unwrap_or("");
        let mut rating = Rating::from_code(code).map_err(protocol_message)?;
        if let Some(reason) = cells.get("reject_reason") {
            let reason: RejectReason = reason.parse().map_err(protocol_message)?;
            if rating.is_usable() {
                return Err(format!(
                    "usable code '{code}' with reject reason '{reason}'"
                ));
            }
            rating.usable = Usability::Reject(reason);
        }
        (rating, true)
    };
    check_derived(cells, &rating, grades_known)?;
    let confidence = cells
        .get("confidence")
        .map(|text| match text.parse::<u8>() {
            Ok(value @ 1..=5) => Ok(value),
            _ => Err(format!(
                "confidence: '{text}' is not an integer from 1 to 5"
            )),
        })
        .transpose()?;
    let time_ms = cells
        .get("time_ms")
        .map(|text| {
            // The store keeps a signed 64-bit number: larger values would wrap.
            text.parse::<u64>()
                .ok()
                .filter(|ms| i64::try_from(*ms).is_ok())
                .ok_or_else(|| format!("time_ms: '{text}' is not a whole number of milliseconds"))
        })
        .transpose()?;
    let rated_at = cells
        .get("rated_at")
        .map(|text| {
            if is_rfc3339(text) && text.get(17..19) == Some("60") {
                // RFC 3339 allows a leap second; the store's timestamps do not, and
                // would refuse the whole file's transaction.
                Err(format!(
                    "rated_at: '{text}' is a leap second, which the store cannot keep (write :59)"
                ))
            } else if let Some(time) = rfc3339_for_store(text) {
                Ok(time)
            } else {
                Err(format!(
                    "rated_at: '{text}' is not an RFC 3339 time such as 2024-05-01T14:03:00Z"
                ))
            }
        })
        .transpose()?;
    Ok(Some(ParsedRow {
        line,
        key,
        rating,
        grades_known,
        comment: cells.raw("comment").map(str::to_string),
        confidence,
        time_ms,
        rated_at,
        rater: cells.get("rater").map(str::to_string),
    }))
}

/// One notebook row; `None` when its label and code are both missing.
fn parse_notebook_row(cells: &Cells<'_>, line: usize) -> Result<Option<ParsedRow>, String> {
    let img_id = cells.get("img_id").ok_or("img_id is empty")?;
    if cells.get("label").is_none() && cells.get("code").is_none() {
        return Ok(None);
    }
    let rating = Rating::from_code(cells.get("code").unwrap_or("")).map_err(protocol_message)?;
    if cells.get("label").is_none() {
        return Err(format!(
            "label is missing (code '{}' has tier {})",
            rating.code(),
            rating.tier()
        ));
    }
    check_derived(cells, &rating, true)?;
    Ok(Some(ParsedRow::new(
        line,
        ImageKey::from_name(img_id),
        rating,
    )))
}

fn parse_mriqc_row(
    cells: &Cells<'_>,
    line: usize,
    raters: &[(usize, String)],
    exclude: MriqcExclude,
) -> Result<RowOutcome, String> {
    let key = match cells.get("bids_name") {
        Some(name) => ImageKey::from_name(name),
        None => ImageKey::Bids(
            bids_from_columns(
                cells,
                ["subject_id", "session_id", "acq_id", "run_id", "suffix"],
            )
            .ok_or("no image key: bids_name and subject_id are both empty")?,
        ),
    };
    let mut rows = Vec::new();
    let mut missing = 0;
    for (position, rater) in raters {
        let Some(text) = cells.at(*position) else {
            missing += 1;
            continue;
        };
        let score = text.strip_suffix(".0").unwrap_or(text);
        let rating = match (score, exclude) {
            ("1" | "+1", _) => quality_only(Quality::Good),
            ("0" | "-0", _) => quality_only(Quality::Medium),
            ("-1", MriqcExclude::Reject) => Rating::reject(RejectReason::Other),
            ("-1", MriqcExclude::Bad) => quality_only(Quality::Bad),
            _ => {
                return Err(format!(
                    "{rater}: '{text}' is not -1 (exclude), 0 (doubtful) or 1 (accept)"
                ));
            }
        };
        let mut row = ParsedRow::new(line, key.clone(), rating);
        row.grades_known = false;
        row.rater = Some(rater.clone());
        rows.push(row);
    }
    Ok(RowOutcome::Rated(rows, missing))
}

/// One row of fetMRQC's merged CSV (`rate::external` documents the mapping).
fn parse_fetmrqc_row(
    cells: &Cells<'_>,
    line: usize,
    exclude: MriqcExclude,
) -> Result<Option<ParsedRow>, String> {
    let key = match cells.get("im") {
        Some(image) => ImageKey::from_name(image),
        None => ImageKey::Bids(
            bids_from_columns(cells, ["sub", "ses", "acq", "run", "suffix"])
                .ok_or("no image key: im and sub are both empty")?,
        ),
    };
    let Some(score) = cells.get("rating") else {
        return Ok(None);
    };
    let score: f64 = score
        .parse()
        .ok()
        .filter(|s: &f64| (0.0..=4.0).contains(s))
        .ok_or_else(|| format!("rating: '{score}' is not a number from 0 to 4"))?;
    let rating = super::external::fetmrqc_rating(score, exclude);
    let mut notes = Vec::new();
    for artefact in ["fetal_motion", "bias_field"] {
        if let Some(text) = cells.get(artefact) {
            let value: f64 = text
                .parse()
                .ok()
                .filter(|v: &f64| (0.0..=3.0).contains(v))
                .ok_or_else(|| format!("{artefact}: '{text}' is not a number from 0 to 3"))?;
            notes.push(format!(
                "{artefact} {text} ({})",
                super::external::fetmrqc_artefact_level(value)
            ));
        }
    }
    if let Some(artifacts) = cells.get("artifacts").filter(|a| *a != "[]") {
        notes.push(format!("artifacts {artifacts}"));
    }
    if let Some(comment) = cells.raw("comments").filter(|c| !c.trim().is_empty()) {
        notes.push(comment.to_string());
    }
    let mut row = ParsedRow::new(line, key, rating);
    row.grades_known = false;
    row.comment = (!notes.is_empty()).then(|| format!("fetMRQC: {}", notes.join("; ")));
    row.time_ms = cells
        .get("time_sec")
        .and_then(|t| t.parse::<f64>().ok())
        .and_then(seconds_to_ms);
    row.rated_at = cells
        .get("timestamp")
        .filter(|t| t.get(17..19) != Some("60"))
        .and_then(rfc3339_for_store);
    Ok(Some(row))
}

/// A rating time in seconds (MRIQC's widget, fetMRQC) as the store's milliseconds:
/// `None` unless finite, not negative and within the store's BIGINT (a `time_sec` of
/// 1e300 was saturated to u64::MAX and stored as -1).
pub fn seconds_to_ms(seconds: f64) -> Option<u64> {
    let ms = (seconds * 1000.0).round();
    // i64::MAX as f64 rounds up to 2^63, which is out of range: strictly below it.
    (ms.is_finite() && ms >= 0.0 && ms < i64::MAX as f64).then_some(ms as u64)
}

/// A usable rating whose three grades all carry `quality`, for quality-only sources.
pub fn quality_only(quality: Quality) -> Rating {
    let grade = quality.grade();
    Rating::usable(false, grade, grade, grade)
}

/// An RFC 3339 time as the store's timestamps read it: `t` and `z` (which RFC 3339
/// allows) written `T` and `Z`, since DuckDB refuses them and one such row made the
/// whole file's save fail. `None` when `text` is not an RFC 3339 time.
pub fn rfc3339_for_store(text: &str) -> Option<String> {
    if !is_rfc3339(text) || !within_store_years(text) {
        return None;
    }
    let mut time = text.to_string();
    // Both are ASCII at positions `is_rfc3339` checked, so the edits keep UTF-8 valid.
    if time.as_bytes()[10] == b't' {
        time.replace_range(10..11, "T");
    }
    if time.ends_with('z') {
        time.pop();
        time.push('Z');
    }
    Some(time)
}

/// Whether an RFC 3339 time (checked by [`is_rfc3339`]) falls in the years 1 to 9999
/// in UTC, where the store keeps it and exports it back as RFC 3339:
/// `9999-12-31T23:59:59-23:59` is in the year 10000 in UTC, and `0000-01-01T00:00:00+01:00`
/// in the year -1, which the export wrote as times no reader (this one included) takes.
fn within_store_years(text: &str) -> bool {
    let number = |range: std::ops::Range<usize>| -> i64 {
        text.get(range)
            .and_then(|part| part.parse().ok())
            .unwrap_or(0)
    };
    let days = days_from_civil(number(0..4), number(5..7), number(8..10));
    let local_minutes = days * 1440 + number(11..13) * 60 + number(14..16);
    let offset = match text.len().checked_sub(6).and_then(|at| text.get(at..)) {
        Some(zone) if zone.starts_with(['+', '-']) => {
            let minutes = zone[1..3].parse::<i64>().unwrap_or(0) * 60
                + zone[4..6].parse::<i64>().unwrap_or(0);
            if zone.starts_with('-') {
                -minutes
            } else {
                minutes
            }
        }
        _ => 0,
    };
    let utc = local_minutes - offset;
    (days_from_civil(1, 1, 1) * 1440..days_from_civil(10_000, 1, 1) * 1440).contains(&utc)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = of_era * 365 + of_era / 4 - of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, `T` also `t` or a space.
pub fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    if bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return false;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1] {
        return false;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let count = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if count == 0 {
            return false;
        }
        rest = &fraction[count..];
    }
    match rest {
        "Z" | "z" => true,
        offset if offset.len() == 6 && offset.is_ascii() => {
            let bytes = offset.as_bytes();
            let two_digits = |range: std::ops::Range<usize>| {
                let part = &offset[range];
                part.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| part.parse::<u32>().ok())
                    .flatten()
            };
            matches!(bytes[0], b'+' | b'-')
                && bytes[3] == b':'
                && two_digits(1..3).is_some_and(|h| h <= 23)
                && two_digits(4..6).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

/// Columns of the native format, in the order the writer uses.
pub const NATIVE_COLUMNS: [&str; 20] = [
    "subject",
    "session",
    "acq",
    "run",
    "suffix",
    "path",
    "rater",
    "code",
    "usable",
    "reject_reason",
    "gado",
    "motion",
    "contrast",
    "noise",
    "tier",
    "quality",
    "comment",
    "confidence",
    "time_ms",
    "rated_at",
];

fn table_writer(delimiter: Delimiter) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .delimiter(delimiter.byte())
        .from_writer(Vec::new())
}

fn finish(writer: csv::Writer<Vec<u8>>) -> Result<String, FormatError> {
    let bytes = writer
        .into_inner()
        .map_err(|error| FormatError::Write(error.to_string()))?;
    String::from_utf8(bytes).map_err(|error| FormatError::Write(error.to_string()))
}

/// A value such as a subject named `NA` would read back as missing: refuse it rather
/// than write a file that loses it.
fn refuse_missing_markers(
    record: &[String],
    columns: &[&str],
    index: usize,
    row: &ParsedRow,
    format: FileFormat,
) -> Result<(), FormatError> {
    match record
        .iter()
        .zip(columns)
        .find(|(cell, _)| !cell.trim().is_empty() && is_missing(cell))
    {
        Some((cell, column)) => Err(FormatError::NotExpressible {
            index,
            image: row.key.name(),
            format,
            reason: format!("{column} '{cell}' would read back as a missing value"),
        }),
        None => Ok(()),
    }
}

/// Writes rows in the native format with all [`NATIVE_COLUMNS`]. Rejects leave gado
/// and grades empty; quality-only rows leave code, gado and grades empty and keep
/// `quality`, so that reading the text back gives the same rows (line numbers aside).
pub fn write_native(rows: &[ParsedRow], delimiter: Delimiter) -> Result<String, FormatError> {
    let mut writer = table_writer(delimiter);
    let write_error = |error: csv::Error| FormatError::Write(error.to_string());
    writer.write_record(NATIVE_COLUMNS).map_err(write_error)?;
    for (index, row) in rows.iter().enumerate() {
        let (bids, path) = match &row.key {
            ImageKey::Bids(key) => (Some(key), String::new()),
            ImageKey::Path(path) => (None, path.clone()),
        };
        let entity = |pick: fn(&BidsKey) -> Option<&String>| {
            bids.and_then(pick).cloned().unwrap_or_default()
        };
        let rating = &row.rating;
        let detailed = rating.is_usable() && row.grades_known;
        let detail = |text: String| if detailed { text } else { String::new() };
        let optional = |value: Option<String>| value.unwrap_or_default();
        let record = [
            bids.map(|key| key.subject.clone()).unwrap_or_default(),
            entity(|key| key.session.as_ref()),
            entity(|key| key.acq.as_ref()),
            entity(|key| key.run.as_ref()),
            entity(|key| key.suffix.as_ref()),
            path,
            optional(row.rater.clone()),
            if row.grades_known {
                rating.code()
            } else {
                String::new()
            },
            rating.is_usable().to_string(),
            optional(rating.usable.reject_reason().map(|r| r.to_string())),
            detail(rating.gado.to_string()),
            detail(rating.motion.to_string()),
            detail(rating.contrast.to_string()),
            detail(rating.noise.to_string()),
            rating.tier().to_string(),
            optional(rating.quality().map(|q| q.to_string())),
            optional(row.comment.clone()),
            optional(row.confidence.map(|c| c.to_string())),
            optional(row.time_ms.map(|t| t.to_string())),
            optional(row.rated_at.clone()),
        ];
        refuse_missing_markers(&record, &NATIVE_COLUMNS, index, row, FileFormat::Native)?;
        writer.write_record(&record).map_err(write_error)?;
    }
    finish(writer)
}

/// Writes rows in the authors' notebook layout `index, img_id, code, label`. Reject
/// reasons are not expressible and become a plain `r`; quality-only rows are refused
/// because a code would invent artefact grades.
pub fn write_notebook(rows: &[ParsedRow], delimiter: Delimiter) -> Result<String, FormatError> {
    let mut writer = table_writer(delimiter);
    let write_error = |error: csv::Error| FormatError::Write(error.to_string());
    writer
        .write_record(["index", "img_id", "code", "label"])
        .map_err(write_error)?;
    for (index, row) in rows.iter().enumerate() {
        if !row.grades_known && row.rating.is_usable() {
            return Err(FormatError::NotExpressible {
                index,
                image: row.key.name(),
                format: FileFormat::Notebook,
                reason: "a quality-only rating has no artefact grades to write as a code".into(),
            });
        }
        let record = [
            index.to_string(),
            row.key.name(),
            row.rating.code(),
            row.rating.tier().to_string(),
        ];
        refuse_missing_markers(
            &record,
            &["index", "img_id", "code", "label"],
            index,
            row,
            FileFormat::Notebook,
        )?;
        writer.write_record(&record).map_err(write_error)?;
    }
    finish(writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, name: &str) -> ParsedFile {
        parse_ratings(text, name, &ParseOptions::default()).unwrap()
    }

    fn bids(subject: &str, session: Option<&str>) -> ImageKey {
        ImageKey::Bids(BidsKey {
            subject: subject.into(),
            session: session.map(str::to_string),
            acq: None,
            run: None,
            suffix: None,
        })
    }

    #[test]
    fn bids_names_parse_and_print() {
        let key = BidsKey::from_name("sub-01_ses-M000_acq-3d_run-2_FLAIR.nii.gz").unwrap();
        assert_eq!(key.subject, "01");
        assert_eq!(key.session.as_deref(), Some("M000"));
        assert_eq!(key.acq.as_deref(), Some("3d"));
        assert_eq!(key.run.as_deref(), Some("2"));
        assert_eq!(key.suffix.as_deref(), Some("FLAIR"));
        assert_eq!(key.name(), "sub-01_ses-M000_acq-3d_run-2_FLAIR");
        assert_eq!(ImageKey::from_name("sub-A_ses-B"), bids("A", Some("B")));
        assert_eq!(
            ImageKey::from_name("sub-1_rec-norm_T1w"),
            ImageKey::Path("sub-1_rec-norm_T1w".into())
        );
        assert_eq!(
            ImageKey::from_name("image_10426"),
            ImageKey::Path("image_10426".into())
        );
    }

    #[test]
    fn notebook_as_pandas_writes_it() {
        let text = "\timg_id\tcode\tlabel\n0\tsub-001_ses-M000\tkaz\t2\n1\tsub-002_ses-M000\t\t1\n2\tsub-003_ses-M006\tr\t4.0\n3\tsub-004_ses-M000\taaa\t3\n4\tsub-005_ses-M000\taa\t2\n5\timage_10426\tzz\t3\n";
        let parsed = parse(text, "ratings.tsv");
        assert_eq!(parsed.format, FileFormat::Notebook);
        assert_eq!(parsed.delimiter, Delimiter::Tab);
        let codes: Vec<String> = parsed.rows.iter().map(|r| r.rating.code()).collect();
        assert_eq!(codes, ["kaz", "", "r", "zz"]);
        assert_eq!(parsed.rows[0].key, bids("001", Some("M000")));
        assert_eq!(parsed.rows[0].line, 2);
        assert_eq!(parsed.rows[3].key, ImageKey::Path("image_10426".into()));
        assert_eq!(parsed.invalid.len(), 2);
        assert_eq!(parsed.invalid[0].line, 5);
        assert!(
            parsed.invalid[0]
                .message
                .contains("motion has at most two levels")
        );
        assert_eq!(parsed.invalid[1].line, 6);
        assert_eq!(
            parsed.invalid[1].message,
            "label 2 does not match code 'aa' (tier 3)"
        );
    }

    #[test]
    fn notebook_csv_with_named_index() {
        let text = "Unnamed: 0,img_id,code,label\n0,sub-9_ses-1,dd,3\n";
        let parsed = parse(text, "export");
        assert_eq!(parsed.format, FileFormat::Notebook);
        assert_eq!(parsed.delimiter, Delimiter::Comma);
        assert_eq!(parsed.rows[0].rating.noise, Grade::Severe);
    }

    #[test]
    fn native_with_codes_and_metadata() {
        let text = "subject,session,rater,code,reject_reason,comment,confidence,time_ms,rated_at\n\
                    sub-01,M000,ann,kzz,,\"ghost, maybe\",4,1530,2024-05-01T14:03:00Z\n\
                    02,,ann,r,not_3d,,,,\n\
                    03,,ann,a,not_3d,,,,\n\
                    04,,ann,a,,,9,,\n\
                    05,,ann,z,,,,,yesterday\n";
        let parsed = parse(text, "x.csv");
        assert_eq!(parsed.format, FileFormat::Native);
        assert_eq!(parsed.rows.len(), 2);
        let first = &parsed.rows[0];
        assert_eq!(first.key, bids("01", Some("M000")));
        assert_eq!(first.rating.code(), "kzz");
        assert_eq!(first.comment.as_deref(), Some("ghost, maybe"));
        assert_eq!((first.confidence, first.time_ms), (Some(4), Some(1530)));
        assert_eq!(first.rater.as_deref(), Some("ann"));
        assert_eq!(parsed.rows[1].rating, Rating::reject(RejectReason::Not3d));
        let lines: Vec<usize> = parsed.invalid.iter().map(|i| i.line).collect();
        assert_eq!(lines, [4, 5, 6]);
        assert!(parsed.invalid[1].message.contains("confidence"));
        assert!(parsed.invalid[2].message.contains("rated_at"));
    }

    #[test]
    fn missing_values_are_no_rating_in_every_format() {
        for marker in ["", "n/a", "NA", "N/A", " na "] {
            assert!(is_missing(marker), "{marker:?}");
        }
        for value in ["0", "nan", "none", "n/a/", "-"] {
            assert!(!is_missing(value), "{value:?}");
        }

        let mriqc = "bids_name\trater_1\trater_2\trater_3\n\
                     sub-1_T1w\t1\tn/a\t\n\
                     sub-2_T1w\tNA\tn/a\tN/A\n\
                     sub-3_T1w\t-1\t0\tn/a\n";
        let parsed = parse(mriqc, "mriqc.tsv");
        assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        assert_eq!(parsed.rows.len(), 3);
        assert_eq!(parsed.missing, 6);
        let raters: Vec<&str> = parsed
            .rows
            .iter()
            .map(|r| r.rater.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(raters, ["rater_1", "rater_1", "rater_2"]);

        let explicit = "subject\tusable\tgado\tmotion\tcontrast\tnoise\tconfidence\trated_at\tcomment\n\
                        01\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\n\
                        02\t\t\t\t\t\t\t\t\n\
                        03\ttrue\tNA\t1\t0\t0\tNA\tn/a\tn/a\n\
                        04\tNA\t\t2\t\t\t\t\t\n";
        let parsed = parse(explicit, "x.tsv");
        assert_eq!(parsed.missing, 2);
        assert_eq!(parsed.rows.len(), 1);
        let row = &parsed.rows[0];
        assert_eq!(row.rating.code(), "a");
        assert_eq!(
            (row.confidence, &row.rated_at, &row.comment),
            (None, &None, &None)
        );
        assert_eq!(parsed.invalid.len(), 1);
        assert_eq!(parsed.invalid[0].line, 5);
        assert!(
            parsed.invalid[0]
                .message
                .contains("usable is missing while motion is given"),
            "{}",
            parsed.invalid[0].message
        );

        let coded = "subject,code,tier\n01,n/a,\n02,,NA\n03,,1\n04,NA,2\n05,zz,\n";
        let parsed = parse(coded, "x.csv");
        assert_eq!(parsed.missing, 2);
        let codes: Vec<String> = parsed.rows.iter().map(|r| r.rating.code()).collect();
        assert_eq!(
            codes,
            ["", "zz"],
            "an empty code with tier 1 is a good image"
        );
        assert_eq!(parsed.invalid.len(), 1, "{:?}", parsed.invalid);
        assert_eq!(parsed.invalid[0].line, 5);

        let notebook = "index\timg_id\tcode\tlabel\n\
                        0\tsub-1_ses-1\t\tn/a\n\
                        1\tsub-2_ses-1\tn/a\t1\n\
                        2\tsub-3_ses-1\tNA\tNA\n\
                        3\tsub-4_ses-1\tk\tn/a\n";
        let parsed = parse(notebook, "nb.tsv");
        assert_eq!(parsed.format, FileFormat::Notebook);
        assert_eq!(parsed.missing, 2);
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.rows[0].rating.tier(), Tier::from_number(1).unwrap());
        assert_eq!(parsed.invalid[0].line, 5);
        assert!(parsed.invalid[0].message.contains("label is missing"));
    }

    #[test]
    fn values_beyond_what_the_store_keeps_are_refused_by_row() {
        let text = "subject,code,time_ms\n01,a,9223372036854775807\n02,a,9223372036854775808\n";
        let parsed = parse(text, "x.csv");
        assert_eq!(parsed.rows[0].time_ms, Some(i64::MAX as u64));
        assert_eq!(parsed.invalid.len(), 1);
        assert!(parsed.invalid[0].message.starts_with("time_ms"));
        let text = "subject,code,rated_at\n01,a,2016-12-31T23:59:60Z\n";
        let parsed = parse(text, "x.csv");
        assert!(parsed.invalid[0].message.contains("leap second"));
    }

    #[test]
    fn writers_refuse_values_that_read_back_as_missing() {
        let mut row = ParsedRow::new(2, bids("NA", None), Rating::from_code("a").unwrap());
        let error = write_native(std::slice::from_ref(&row), Delimiter::Tab).unwrap_err();
        assert!(error.to_string().contains("subject 'NA'"), "{error}");
        row.key = bids("01", None);
        row.comment = Some("n/a".into());
        assert!(write_native(std::slice::from_ref(&row), Delimiter::Tab).is_err());
        row.comment = None;
        assert!(write_native(std::slice::from_ref(&row), Delimiter::Tab).is_ok());
        row.key = ImageKey::Path("na".into());
        let error = write_notebook(&[row], Delimiter::Tab).unwrap_err();
        assert!(error.to_string().contains("img_id 'na'"), "{error}");
    }

    #[test]
    fn native_explicit_columns() {
        let text = "path\tusable\treject_reason\tgado\tmotion\tcontrast\tnoise\tcode\tquality\n\
                    /a.nii.gz\ttrue\t\tfalse\t1\t0\tsevere\tadd\tbad\n\
                    /b.nii.gz\tfalse\tderived_map\t\t\t\t\tr\t\n\
                    /c.nii.gz\ttrue\t\t\t\t\t\t\tmedium\n\
                    /d.nii.gz\tfalse\t\t\t2\t\t\t\t\n\
                    /e.nii.gz\ttrue\t\t\t1\t\t0\t\t\n\
                    /f.nii.gz\ttrue\t\tfalse\t1\t0\t0\tz\t\n";
        let parsed = parse(text, "x");
        assert_eq!(parsed.rows.len(), 3, "{:?}", parsed.invalid);
        assert_eq!(parsed.rows[0].rating.code(), "add");
        assert_eq!(
            parsed.rows[1].rating,
            Rating::reject(RejectReason::DerivedMap)
        );
        assert!(!parsed.rows[2].grades_known);
        assert_eq!(parsed.rows[2].rating.quality(), Some(Quality::Medium));
        let messages: Vec<&str> = parsed.invalid.iter().map(|i| i.message.as_str()).collect();
        assert!(messages[0].contains("rejected image carries no"));
        assert_eq!(messages[1], "contrast is empty");
        assert!(messages[2].contains("does not match"));
    }

    #[test]
    fn mriqc_table_maps_scores() {
        let text = "subject_id,site,rater_1,rater_2,rater_3\n50002,PITT,1,-1,\n50003,PITT,0,1.0,-1.0\n50004,PITT,2,1,1\n";
        let parsed = parse(text, "y_abide.csv");
        assert_eq!(parsed.format, FileFormat::Mriqc);
        assert_eq!(parsed.rows.len(), 5);
        assert_eq!(parsed.rows[0].key, bids("50002", None));
        assert_eq!(parsed.rows[0].rater.as_deref(), Some("rater_1"));
        assert_eq!(parsed.rows[0].rating.quality(), Some(Quality::Good));
        assert_eq!(parsed.rows[1].rating, Rating::reject(RejectReason::Other));
        assert_eq!(parsed.rows[2].rating.quality(), Some(Quality::Medium));
        assert!(
            parsed
                .rows
                .iter()
                .all(|row| !row.grades_known && !row.rating.gado)
        );
        assert_eq!(parsed.invalid[0].line, 4);
        assert!(parsed.invalid[0].message.contains("rater_1: '2'"));

        let options = ParseOptions {
            format: None,
            mriqc_exclude: MriqcExclude::Bad,
        };
        let as_bad = parse_ratings(text, "y.csv", &options).unwrap();
        assert_eq!(as_bad.rows[1].rating.quality(), Some(Quality::Bad));
    }

    #[test]
    fn mriqc_bids_name_key() {
        let text = "bids_name\trater_alice\nsub-50002_ses-1_run-1_T1w\t0\n";
        let parsed = parse(text, "x");
        let ImageKey::Bids(key) = &parsed.rows[0].key else {
            panic!("expected a BIDS key");
        };
        assert_eq!(key.run.as_deref(), Some("1"));
        assert_eq!(key.suffix.as_deref(), Some("T1w"));
    }

    #[test]
    fn detection_errors_are_clear() {
        let unknown = parse_ratings("a,b\n1,2\n", "f.csv", &ParseOptions::default());
        assert!(matches!(unknown, Err(FormatError::UnknownFormat { .. })));
        let ambiguous = parse_ratings(
            "subject,img_id,code,label\n1,2,,1\n",
            "f.csv",
            &ParseOptions::default(),
        )
        .unwrap_err();
        assert!(ambiguous.to_string().contains("native, notebook"));
        assert!(ambiguous.to_string().contains("--format"));
        let forced = ParseOptions {
            format: Some(FileFormat::Notebook),
            ..ParseOptions::default()
        };
        assert_eq!(
            parse_ratings("subject,img_id,code,label\n1,sub-2,,1\n", "f.csv", &forced)
                .unwrap()
                .rows
                .len(),
            1
        );
        let missing = parse_ratings("img_id,code\n", "f.csv", &forced).unwrap_err();
        assert!(missing.to_string().contains("needs column label"));
        assert!(matches!(
            parse_ratings("  \n", "f.csv", &ParseOptions::default()),
            Err(FormatError::Empty { .. })
        ));
        assert!(matches!(
            parse_ratings("code,code\n", "f.csv", &ParseOptions::default()),
            Err(FormatError::DuplicateColumn { .. })
        ));
        assert!("auto".parse::<FileFormat>().is_err());
    }

    #[test]
    fn ragged_and_quoted_rows_are_reported_not_fatal() {
        let text = "img_id,code,label\nsub-1,a,2,extra\n\"sub-2,z,2\nsub-3,,1\n";
        let parsed = parse(text, "f.csv");
        assert_eq!(parsed.invalid[0].line, 2);
        assert!(parsed.invalid[0].message.contains("expected 3 fields"));
    }

    #[test]
    fn an_undo_in_a_history_withdraws_its_own_raters_save_only() {
        // Two stores' histories end to end: both number their saves from 1.
        let joined = "rating_id\tpath\trater\tcode\tundoes\n1\ta.nii\tann\tr\t\n1\ta.nii\tbob\td\t\n2\ta.nii\tann\t\t1\n";
        let parsed = parse(joined, "joined.tsv");
        assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        assert_eq!(parsed.withdrawn, 2);
        let kept: Vec<_> = parsed.rows.iter().map(|r| r.rater.as_deref()).collect();
        assert_eq!(kept, [Some("bob")]);
        // The same rater's id twice: which save the undo names is unclear.
        let twice = "rating_id\tpath\trater\tcode\tundoes\n1\ta.nii\tann\tr\t\n1\tb.nii\tann\td\t\n2\ta.nii\tann\t\t1\n";
        let parsed = parse(twice, "twice.tsv");
        assert_eq!(parsed.invalid.len(), 1, "{:?}", parsed.invalid);
        assert!(
            parsed.invalid[0]
                .message
                .contains("holds 2 times (lines 2, 3)")
        );
        assert_eq!((parsed.rows.len(), parsed.withdrawn), (2, 0));
    }

    #[test]
    fn rfc3339_validation() {
        for good in [
            "2024-05-01T14:03:00Z",
            "2024-02-29T00:00:00.123+02:00",
            "2024-05-01 14:03:00-05:30",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T14:03:00",
            "2024-05-01",
            "2024-05-01T14:03:00.Z",
            "2024-05-01T14:03:00+2:00",
            "२०२४-05-01T14:03:00Z",
            "2024-05-01T14:03:00+€0",
            "2024-05-01T14:03:00+é:00",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn every_time_the_parser_accepts_is_one_the_store_reads() {
        // A time RFC 3339 allows but DuckDB refused (lowercase `t` or `z`) made the
        // save of the whole file fail, valid rows and `--skip-invalid` included.
        let conn = duckdb::Connection::open_in_memory().expect("in-memory DuckDB");
        for text in [
            "2024-01-01t10:00:00z",
            "2024-01-01T10:00:00z",
            "2024-01-01t10:00:00Z",
            "2024-01-01t10:00:00.25+02:00",
            "2024-01-01 10:00:00-23:59",
            "2024-02-29T23:59:59.1234567890123456789+14:00",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59+23:59",
            "0001-01-01T00:00:00z",
            "0001-01-01T00:00:00-01:00",
        ] {
            let stored = rfc3339_for_store(text).expect(text);
            // As the export writes it back, which must read again.
            let read = conn.query_row(
                "SELECT strftime(CAST(? AS TIMESTAMPTZ) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ')",
                [&stored],
                |r| r.get::<_, String>(0),
            );
            let exported = read.unwrap_or_else(|e| panic!("{text} stored as {stored}: {e}"));
            assert!(
                rfc3339_for_store(&exported).is_some(),
                "{text} exported as {exported}"
            );
        }
        // In the years 10000 and -1 in UTC: exported as times no reader takes.
        for outside in [
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:30:00-00:31",
            "0000-01-01T00:00:00+01:00",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:00:00+00:01",
        ] {
            assert_eq!(rfc3339_for_store(outside), None, "{outside}");
        }
        assert_eq!(seconds_to_ms(1e300), None);
        assert_eq!(seconds_to_ms(9.3e15), None);
        assert_eq!(seconds_to_ms(-1.0), None);
        assert_eq!(seconds_to_ms(f64::NAN), None);
        assert_eq!(seconds_to_ms(12.5), Some(12_500));
        assert_eq!(
            rfc3339_for_store("2024-01-01t10:00:00z").as_deref(),
            Some("2024-01-01T10:00:00Z")
        );
        assert_eq!(rfc3339_for_store("2024-01-01T10:00:00"), None);
    }

    #[test]
    fn quotes_are_told_apart_from_values_that_span_lines() {
        // A comment with a line break and commas, quoted as every writer quotes it.
        let fine = "path,code,comment\nsub-01_FLAIR,kaz,\"Artefacts seen:\nmotion, ghosting, \"\"wrap\"\"\"\nsub-02_FLAIR,kaz,fine\n";
        let parsed = parse(fine, "fine.csv");
        assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(
            parsed.rows[0].comment.as_deref(),
            Some("Artefacts seen:\nmotion, ghosting, \"wrap\"")
        );
        // A quote left open in a middle column, closed by the next row's quoted value:
        // the field counts match, and the row between was lost without a word.
        let middle = "path\tcomment\tcode\nsub-01_FLAIR\tok\tkaz\nsub-02_FLAIR\t\"ghosting?\tkaz\nsub-03_FLAIR\t\"see note\"\tkaz\nsub-04_FLAIR\tok\tr\n";
        let parsed = parse(middle, "middle.tsv");
        assert_eq!(parsed.invalid.len(), 1, "{:?}", parsed.invalid);
        assert_eq!(parsed.invalid[0].line, 3);
        assert!(parsed.invalid[0].message.contains("lines 3-4"));
        assert_eq!(parsed.rows.len(), 2);
        // A runaway after a value that spans lines properly, in the same row.
        let after = "path,comment,extra,code\nsub-01_FLAIR,\"multi\nline\",\"runaway,kaz\nsub-02_FLAIR,a,b,kaz\nsub-03_FLAIR,a,b,r\n";
        let parsed = parse(after, "after.csv");
        assert_eq!(parsed.invalid.len(), 1, "{:?}", parsed.invalid);
        assert_eq!(parsed.invalid[0].line, 2);
        assert!(parsed.rows.is_empty());
        // Quotes inside a value that does not start with one are text.
        let inner = "path\tcomment\tcode\nsub-01_FLAIR\tsee \"note\" here\tkaz\n";
        let parsed = parse(inner, "inner.tsv");
        assert!(parsed.invalid.is_empty());
        assert_eq!(parsed.rows[0].comment.as_deref(), Some("see \"note\" here"));
    }

    #[test]
    fn a_quote_left_open_is_a_problem_not_lost_rows() {
        let rows: Vec<ParsedRow> = (1..=5)
            .map(|i| {
                let mut row = ParsedRow::new(
                    i + 1,
                    bids(&format!("0{i}"), None),
                    Rating::from_code("kaz").unwrap(),
                );
                row.comment = Some(format!("ok{i}"));
                row
            })
            .collect();
        for delimiter in [Delimiter::Tab, Delimiter::Comma] {
            let text = write_native(&rows, delimiter).unwrap();
            assert_eq!(parse(&text, "intact").rows.len(), 5);
            // LF, CRLF and lone CR: the same lines reported.
            for ending in ["\n", "\r\n", "\r"] {
                let text = text.replace('\n', ending);
                // Never closed: the rest of the file would be the comment of line 3.
                let open = parse(&text.replace("ok2", "\"ghosting?"), "open");
                assert_eq!(open.rows.len(), 1, "{delimiter:?} {ending:?}");
                assert_eq!(open.invalid.len(), 1);
                assert_eq!(open.invalid[0].line, 3);
                assert_eq!(open.rows[0].line, 2);
                assert!(
                    open.invalid[0].message.contains("lines 3-6"),
                    "{}",
                    open.invalid[0].message
                );
                // Closed by a quote three rows on: the rows between would vanish.
                let closed = text
                    .replace("ok2", "\"ghosting?")
                    .replace("ok4", "see \"note\"");
                let closed = parse(&closed, "closed");
                assert_eq!(closed.invalid.len(), 1, "{:?}", closed.invalid);
                assert!(closed.invalid[0].message.contains("lines 3-5"));
                assert_eq!(closed.rows.len(), 2);
            }
        }
    }

    #[test]
    fn native_round_trip_is_lossless() {
        let mut rows = vec![
            ParsedRow::new(
                2,
                bids("01", Some("M000")),
                Rating::from_code("kaz").unwrap(),
            ),
            ParsedRow::new(
                3,
                ImageKey::Path("/w/x\ty.nii.gz".into()),
                Rating::reject(RejectReason::TruncatedFov),
            ),
            ParsedRow::new(4, bids("02", None), quality_only(Quality::Bad)),
        ];
        rows[0].comment = Some("two\nlines, \"quoted\"".into());
        rows[0].confidence = Some(5);
        rows[0].time_ms = Some(12);
        rows[0].rated_at = Some("2024-05-01T14:03:00Z".into());
        rows[0].rater = Some("ann".into());
        rows[2].grades_known = false;
        if let ImageKey::Bids(key) = &mut rows[1 - 1].key {
            key.acq = Some("3d".into());
            key.suffix = Some("FLAIR".into());
        }
        for delimiter in [Delimiter::Tab, Delimiter::Comma] {
            let text = write_native(&rows, delimiter).unwrap();
            let back = parse(&text, "back");
            assert!(back.invalid.is_empty(), "{:?}", back.invalid);
            let strip = |rows: &[ParsedRow]| -> Vec<ParsedRow> {
                rows.iter()
                    .map(|r| ParsedRow {
                        line: 0,
                        ..r.clone()
                    })
                    .collect()
            };
            assert_eq!(strip(&back.rows), strip(&rows));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(
            text in "[a-z_,\t\n\"0-9 -]{0,200}",
            header in proptest::sample::select(vec![
                "", "img_id,code,label\n", "subject\tcode\n", "bids_name,rater_1\n",
                "path,usable,motion,contrast,noise,quality\n",
            ]),
        ) {
            let _ = parse_ratings(&format!("{header}{text}"), "fuzz", &ParseOptions::default());
        }
    }

    #[test]
    fn rating_files_decode_as_utf8_or_marked_utf16_and_other_bytes_are_refused() {
        let text = "img_id\tcode\tlabel\tcomment\nsub-01\tkaz\t2\tcafé\n";
        assert_eq!(decode_text(text.as_bytes(), "f").expect("utf-8"), text);
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(decode_text(&le, "f").expect("utf-16le"), text);
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(decode_text(&be, "f").expect("utf-16be"), text);
        // The same text saved as Latin-1: é is the one byte 0xE9, on line 2.
        let latin1: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
        let e = decode_text(&latin1, "week1.tsv").expect_err("latin-1");
        let message = e.to_string();
        assert!(message.contains("week1.tsv"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("0xE9"), "{message}");
        assert!(decode_text(&[0xFF, 0xFE, 0x41], "odd").is_err());
    }

    #[test]
    fn notebook_writer_refuses_quality_only_rows() {
        let mut row = ParsedRow::new(2, bids("1", None), quality_only(Quality::Medium));
        row.grades_known = false;
        let error = write_notebook(&[row], Delimiter::Tab).unwrap_err();
        assert!(error.to_string().contains("row 0 (sub-1)"));
    }
}
