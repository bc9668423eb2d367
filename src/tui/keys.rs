//! Key bindings as data: one table of (key, action, help) per view, defaults in code,
//! overridable from `~/.config/cdwqc/keys.toml` or the file named by `$CDWQC_KEYS`.
//!
//! The file maps action names to keys, per section (`global`, `dashboard`, `images`,
//! `viewer`, `rate`, `sql`, `reports`, `jobs`), e.g. `[rate]` / `save = "enter"` / `undo = "ctrl-z"`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Environment variable naming a key-binding file.
pub const KEYS_ENV: &str = "CDWQC_KEYS";

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The views of the dashboard, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    Dashboard,
    Images,
    Viewer,
    Rate,
    Sql,
    Reports,
    Jobs,
}

impl View {
    pub const ALL: [View; 7] = [
        View::Dashboard,
        View::Images,
        View::Viewer,
        View::Rate,
        View::Sql,
        View::Reports,
        View::Jobs,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Dashboard => "Dashboard",
            View::Images => "Images",
            View::Viewer => "Viewer",
            View::Rate => "Rate",
            View::Sql => "SQL",
            View::Reports => "Reports",
            View::Jobs => "Jobs",
        }
    }

    fn section(self) -> &'static str {
        match self {
            View::Dashboard => "dashboard",
            View::Images => "images",
            View::Viewer => "viewer",
            View::Rate => "rate",
            View::Sql => "sql",
            View::Reports => "reports",
            View::Jobs => "jobs",
        }
    }
}

/// Everything a key can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Quit,
    Help,
    NextTab,
    PrevTab,
    Show(View),
    Refresh,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    CycleSequence,
    CycleStatus,
    CycleRated,
    Search,
    ClearFilters,
    OpenViewer,
    NextPlane,
    SliceUp,
    SliceDown,
    SliceUpFast,
    SliceDownFast,
    WindowWider,
    WindowNarrower,
    LevelUp,
    LevelDown,
    ResetWindow,
    /// Adds a key to the pending rating code.
    Code(char),
    DeleteCodeKey,
    Save,
    Undo,
    ReviewLater,
    NextImage,
    PrevImage,
    CycleTask,
    CycleTarget,
    QueueTriage,
    ExportReports,
    CycleModel,
    CycleIqm,
    RunQuery,
    CancelQuery,
    ClearQuery,
    LeaveEditor,
    EditQuery,
    HistoryPrev,
    HistoryNext,
    SavedQueries,
    Export,
    ToggleWrite,
    ScrollLeft,
    ScrollRight,
    NewJob,
    CancelJob,
}

impl Action {
    /// The name used in the key-binding file.
    pub fn name(self) -> String {
        let name = match self {
            Action::Quit => "quit",
            Action::Help => "help",
            Action::NextTab => "next_tab",
            Action::PrevTab => "prev_tab",
            Action::Show(view) => return format!("show_{}", view.section()),
            Action::Refresh => "refresh",
            Action::Up => "up",
            Action::Down => "down",
            Action::PageUp => "page_up",
            Action::PageDown => "page_down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::CycleSequence => "cycle_sequence",
            Action::CycleStatus => "cycle_status",
            Action::CycleRated => "cycle_rated",
            Action::Search => "search",
            Action::ClearFilters => "clear_filters",
            Action::OpenViewer => "open_viewer",
            Action::NextPlane => "next_plane",
            Action::SliceUp => "slice_up",
            Action::SliceDown => "slice_down",
            Action::SliceUpFast => "slice_up_fast",
            Action::SliceDownFast => "slice_down_fast",
            Action::WindowWider => "window_wider",
            Action::WindowNarrower => "window_narrower",
            Action::LevelUp => "level_up",
            Action::LevelDown => "level_down",
            Action::ResetWindow => "reset_window",
            Action::Code('r') => "reject",
            Action::Code('k') => "gadolinium",
            Action::Code('a') => "motion",
            Action::Code('z') => "contrast",
            Action::Code('d') => "noise",
            Action::Code(_) => "code",
            Action::DeleteCodeKey => "delete_code_key",
            Action::Save => "save",
            Action::Undo => "undo",
            Action::ReviewLater => "review_later",
            Action::NextImage => "next_image",
            Action::PrevImage => "prev_image",
            Action::CycleTask => "cycle_task",
            Action::CycleTarget => "cycle_target",
            Action::QueueTriage => "queue_triage",
            Action::CycleModel => "cycle_model",
            Action::CycleIqm => "cycle_iqm",
            Action::ExportReports => "export_reports",
            Action::RunQuery => "run_query",
            Action::CancelQuery => "cancel_query",
            Action::ClearQuery => "clear_query",
            Action::LeaveEditor => "leave_editor",
            Action::EditQuery => "edit_query",
            Action::HistoryPrev => "history_prev",
            Action::HistoryNext => "history_next",
            Action::SavedQueries => "saved_queries",
            Action::Export => "export",
            Action::ToggleWrite => "toggle_write",
            Action::ScrollLeft => "scroll_left",
            Action::ScrollRight => "scroll_right",
            Action::NewJob => "new_job",
            Action::CancelJob => "cancel_job",
        };
        name.to_string()
    }
}

/// A key with its modifiers (Shift is folded into the character).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyChord {
    pub code: KeyCode,
    pub ctrl: bool,
}

impl KeyChord {
    pub const fn plain(code: KeyCode) -> Self {
        Self { code, ctrl: false }
    }

    pub const fn char(c: char) -> Self {
        Self::plain(KeyCode::Char(c))
    }

    pub const fn ctrl(c: char) -> Self {
        Self {
            code: KeyCode::Char(c),
            ctrl: true,
        }
    }

    /// A key that cannot be text: with Ctrl, a function key or Esc. Only these act
    /// while text is typed (the SQL editor).
    pub fn is_command(&self) -> bool {
        self.ctrl || matches!(self.code, KeyCode::F(_) | KeyCode::Esc)
    }

    pub fn from_event(event: &KeyEvent) -> Self {
        let code = match event.code {
            KeyCode::Char(c) if event.modifiers.contains(KeyModifiers::CONTROL) => {
                KeyCode::Char(c.to_ascii_lowercase())
            }
            other => other,
        };
        Self {
            code,
            ctrl: event.modifiers.contains(KeyModifiers::CONTROL),
        }
    }

    /// Parses `q`, `Q`, `enter`, `ctrl-r`, `f5`, `pagedown`, `space`...
    pub fn parse(text: &str) -> Option<Self> {
        let (ctrl, rest) = match text
            .strip_prefix("ctrl-")
            .or_else(|| text.strip_prefix("Ctrl-"))
        {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCode::Char(if ctrl { c.to_ascii_lowercase() } else { c }),
            _ => match rest.to_ascii_lowercase().as_str() {
                "enter" => KeyCode::Enter,
                "esc" => KeyCode::Esc,
                "tab" => KeyCode::Tab,
                "backtab" | "shift-tab" => KeyCode::BackTab,
                "backspace" => KeyCode::Backspace,
                "delete" => KeyCode::Delete,
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "left" => KeyCode::Left,
                "right" => KeyCode::Right,
                "pageup" => KeyCode::PageUp,
                "pagedown" => KeyCode::PageDown,
                "home" => KeyCode::Home,
                "end" => KeyCode::End,
                "space" => KeyCode::Char(' '),
                f if f.starts_with('f') => KeyCode::F(f[1..].parse().ok()?),
                _ => return None,
            },
        };
        Some(Self { code, ctrl })
    }

    pub fn label(&self) -> String {
        let key = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Enter => "Enter".into(),
            KeyCode::Esc => "Esc".into(),
            KeyCode::Tab => "Tab".into(),
            KeyCode::BackTab => "Shift-Tab".into(),
            KeyCode::Backspace => "Backspace".into(),
            KeyCode::Delete => "Delete".into(),
            KeyCode::Up => "Up".into(),
            KeyCode::Down => "Down".into(),
            KeyCode::Left => "Left".into(),
            KeyCode::Right => "Right".into(),
            KeyCode::PageUp => "PageUp".into(),
            KeyCode::PageDown => "PageDown".into(),
            KeyCode::Home => "Home".into(),
            KeyCode::End => "End".into(),
            KeyCode::F(n) => format!("F{n}"),
            other => other.to_string(),
        };
        if self.ctrl {
            format!("Ctrl-{key}")
        } else {
            key
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub key: KeyChord,
    pub action: Action,
    pub help: &'static str,
}

/// The bindings of every view, plus the global ones tried after a view's own.
#[derive(Debug, Clone)]
pub struct KeyMap {
    pub global: Vec<Binding>,
    pub views: HashMap<View, Vec<Binding>>,
}

fn b(key: KeyChord, action: Action, help: &'static str) -> Binding {
    Binding { key, action, help }
}

fn c(ch: char) -> KeyChord {
    KeyChord::char(ch)
}

fn k(code: KeyCode) -> KeyChord {
    KeyChord::plain(code)
}

fn list_keys() -> Vec<Binding> {
    vec![
        b(k(KeyCode::Down), Action::Down, "next row"),
        b(k(KeyCode::Up), Action::Up, "previous row"),
        b(c('j'), Action::Down, "next row"),
        b(c('k'), Action::Up, "previous row"),
        b(k(KeyCode::PageDown), Action::PageDown, "next page"),
        b(k(KeyCode::PageUp), Action::PageUp, "previous page"),
        b(k(KeyCode::Home), Action::Top, "first row"),
        b(k(KeyCode::End), Action::Bottom, "last row"),
    ]
}

impl Default for KeyMap {
    fn default() -> Self {
        let global = vec![
            b(c('q'), Action::Quit, "quit (Ctrl-C too)"),
            b(c('?'), Action::Help, "this help"),
            b(k(KeyCode::Tab), Action::NextTab, "next view"),
            b(k(KeyCode::BackTab), Action::PrevTab, "previous view"),
            b(c('1'), Action::Show(View::Dashboard), "dashboard"),
            b(c('2'), Action::Show(View::Images), "images"),
            b(c('3'), Action::Show(View::Viewer), "viewer"),
            b(c('4'), Action::Show(View::Rate), "rate"),
            b(c('5'), Action::Show(View::Sql), "SQL"),
            b(c('6'), Action::Show(View::Reports), "reports"),
            b(c('7'), Action::Show(View::Jobs), "jobs"),
            b(
                KeyChord {
                    code: KeyCode::Char('l'),
                    ctrl: true,
                },
                Action::Refresh,
                "reload from the store",
            ),
        ];
        let mut images = list_keys();
        images.extend([
            b(c('s'), Action::CycleSequence, "filter: next sequence"),
            b(c('t'), Action::CycleStatus, "filter: next status"),
            b(c('x'), Action::CycleRated, "filter: rated / unrated / all"),
            b(
                c('/'),
                Action::Search,
                "search subject (Enter ends, Esc clears)",
            ),
            b(
                c('m'),
                Action::CycleModel,
                "filter: predicted usable / reject / model-rater disagreement",
            ),
            b(
                c('o'),
                Action::CycleIqm,
                "filter: IQM outlier / no IQM outlier / all",
            ),
            b(c('c'), Action::ClearFilters, "clear filters and search"),
            b(k(KeyCode::Enter), Action::OpenViewer, "open in the viewer"),
        ]);
        let viewer = vec![
            b(
                c('v'),
                Action::NextPlane,
                "next plane (axial, coronal, sagittal)",
            ),
            b(k(KeyCode::Up), Action::SliceUp, "next slice"),
            b(k(KeyCode::Down), Action::SliceDown, "previous slice"),
            b(k(KeyCode::PageUp), Action::SliceUpFast, "10 slices up"),
            b(
                k(KeyCode::PageDown),
                Action::SliceDownFast,
                "10 slices down",
            ),
            b(c(']'), Action::WindowWider, "wider window (less contrast)"),
            b(
                c('['),
                Action::WindowNarrower,
                "narrower window (more contrast)",
            ),
            b(c('='), Action::LevelUp, "raise level (darker)"),
            b(c('-'), Action::LevelDown, "lower level (brighter)"),
            b(c('0'), Action::ResetWindow, "reset window and level"),
            b(
                k(KeyCode::Right),
                Action::NextImage,
                "next image of the list",
            ),
            b(
                k(KeyCode::Left),
                Action::PrevImage,
                "previous image of the list",
            ),
        ];
        let rate = vec![
            b(
                c('r'),
                Action::Code('r'),
                "reject (not usable; stands alone)",
            ),
            b(c('k'), Action::Code('k'), "gadolinium injected"),
            b(c('a'), Action::Code('a'), "motion (again: severe)"),
            b(c('z'), Action::Code('z'), "contrast (again: severe)"),
            b(c('d'), Action::Code('d'), "noise (again: severe)"),
            b(
                k(KeyCode::Backspace),
                Action::DeleteCodeKey,
                "delete the last key",
            ),
            b(
                k(KeyCode::Enter),
                Action::Save,
                "save (durable) and show the next image",
            ),
            b(c('u'), Action::Undo, "undo your last saved rating"),
            b(c('l'), Action::ReviewLater, "mark for review later"),
            b(c('n'), Action::NextImage, "next image without saving"),
            b(c('p'), Action::PrevImage, "previous image"),
        ];
        // In the editor only command keys (Ctrl-, F-keys, Esc) act; the others type.
        let sql = vec![
            b(KeyChord::ctrl('r'), Action::RunQuery, "run the query"),
            b(k(KeyCode::F(5)), Action::RunQuery, "run the query"),
            b(
                KeyChord::ctrl('k'),
                Action::CancelQuery,
                "cancel the running query",
            ),
            b(
                k(KeyCode::Esc),
                Action::LeaveEditor,
                "editor -> result table",
            ),
            b(
                k(KeyCode::Enter),
                Action::EditQuery,
                "result table -> editor",
            ),
            b(KeyChord::ctrl('u'), Action::ClearQuery, "clear the editor"),
            b(
                KeyChord::ctrl('p'),
                Action::HistoryPrev,
                "older query (history)",
            ),
            b(
                KeyChord::ctrl('n'),
                Action::HistoryNext,
                "newer query (history)",
            ),
            b(KeyChord::ctrl('o'), Action::SavedQueries, "saved queries"),
            b(KeyChord::ctrl('s'), Action::Export, "export the result"),
            b(KeyChord::ctrl('t'), Action::ToggleWrite, "writing on/off"),
            b(k(KeyCode::F(1)), Action::Help, "this help (in the editor)"),
            b(k(KeyCode::Down), Action::Down, "next row"),
            b(k(KeyCode::Up), Action::Up, "previous row"),
            b(k(KeyCode::PageDown), Action::PageDown, "next page"),
            b(k(KeyCode::PageUp), Action::PageUp, "previous page"),
            b(k(KeyCode::Home), Action::Top, "first row"),
            b(k(KeyCode::End), Action::Bottom, "last row"),
            b(k(KeyCode::Right), Action::ScrollRight, "next column"),
            b(k(KeyCode::Left), Action::ScrollLeft, "previous column"),
        ];
        let mut jobs = list_keys();
        jobs.extend([
            b(
                c('n'),
                Action::NewJob,
                "new job: train or predict (form: arrows, PageUp/PageDown ±10, Enter starts, Esc closes)",
            ),
            b(
                c('c'),
                Action::CancelJob,
                "stop the selected job (training saves a checkpoint)",
            ),
        ]);
        let views = HashMap::from([
            (View::Dashboard, Vec::new()),
            (View::Images, images),
            (View::Viewer, viewer),
            (View::Rate, rate),
            (View::Sql, sql),
            (View::Reports, {
                let mut reports = list_keys();
                reports.extend([
                    b(
                        c('t'),
                        Action::CycleTask,
                        "next task (usable, quality, gado)",
                    ),
                    b(
                        c('o'),
                        Action::CycleTarget,
                        "operating point: target sensitivity 0.90 / 0.95 / 0.99",
                    ),
                    b(
                        c('Q'),
                        Action::QueueTriage,
                        "queue the run's unrated images in the triage band for every rater (twice: picks, then stores)",
                    ),
                    b(
                        c('e'),
                        Action::ExportReports,
                        "write the HTML reports beside the store",
                    ),
                ]);
                reports
            }),
            (View::Jobs, jobs),
        ]);
        Self { global, views }
    }
}

impl KeyMap {
    /// The defaults with the user's file applied: `$CDWQC_KEYS`, else
    /// `~/.config/cdwqc/keys.toml` when it exists.
    pub fn load() -> Result<Self, KeysError> {
        let path = match std::env::var_os(KEYS_ENV) {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".config/cdwqc/keys.toml"))
                .filter(|p| p.is_file()),
        };
        let mut map = Self::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path).map_err(|source| KeysError::Read {
                path: path.clone(),
                source,
            })?;
            map.apply_toml(&path, &text)?;
        }
        Ok(map)
    }

    /// Rebinds actions from TOML text: `[section]` then `action = "key"`.
    pub fn apply_toml(&mut self, path: &Path, text: &str) -> Result<(), KeysError> {
        let invalid = |message: String| KeysError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let table: HashMap<String, HashMap<String, String>> =
            toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (section, entries) in table {
            let bindings = if section == "global" {
                &mut self.global
            } else {
                let view = View::ALL
                    .into_iter()
                    .find(|v| v.section() == section)
                    .ok_or_else(|| invalid(format!("unknown section [{section}]")))?;
                self.views.entry(view).or_default()
            };
            for (action, key) in entries {
                let chord = KeyChord::parse(&key)
                    .ok_or_else(|| invalid(format!("[{section}] {action}: unknown key {key:?}")))?;
                let mut found = false;
                for binding in bindings.iter_mut().filter(|b| b.action.name() == action) {
                    binding.key = chord;
                    found = true;
                }
                if !found {
                    return Err(invalid(format!("[{section}] has no action {action:?}")));
                }
            }
        }
        Ok(())
    }

    /// The action of a key in a view: the view's own bindings first, then global ones.
    pub fn action(&self, view: View, key: &KeyChord) -> Option<Action> {
        self.views
            .get(&view)
            .into_iter()
            .flatten()
            .chain(&self.global)
            .find(|b| b.key == *key)
            .map(|b| b.action)
    }

    /// The label of the first key bound to an action in a view (or globally).
    pub fn label(&self, view: View, action: Action) -> String {
        self.views
            .get(&view)
            .into_iter()
            .flatten()
            .chain(&self.global)
            .find(|b| b.action == action)
            .map_or_else(|| "(unbound)".to_string(), |b| b.key.label())
    }

    /// The help lines of a view: its own keys, then the global ones.
    pub fn help(&self, view: View) -> Vec<(String, &'static str)> {
        self.views
            .get(&view)
            .into_iter()
            .flatten()
            .chain(&self.global)
            .map(|b| (b.key.label(), b.help))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_keys_win_over_global_ones() {
        let map = KeyMap::default();
        assert_eq!(map.action(View::Rate, &c('r')), Some(Action::Code('r')));
        assert_eq!(map.action(View::Rate, &c('q')), Some(Action::Quit));
        assert_eq!(
            map.action(View::Dashboard, &c('2')),
            Some(Action::Show(View::Images))
        );
        assert_eq!(map.action(View::Dashboard, &c('r')), None);
    }

    #[test]
    fn file_rebinds_and_rejects_unknown_names() {
        let mut map = KeyMap::default();
        let path = Path::new("keys.toml");
        map.apply_toml(path, "[rate]\nsave = \"ctrl-s\"\n[global]\nquit = \"Q\"\n")
            .expect("valid file");
        let ctrl_s = KeyChord {
            code: KeyCode::Char('s'),
            ctrl: true,
        };
        assert_eq!(map.action(View::Rate, &ctrl_s), Some(Action::Save));
        assert_eq!(map.action(View::Rate, &k(KeyCode::Enter)), None);
        assert_eq!(map.action(View::Images, &c('Q')), Some(Action::Quit));
        assert!(map.apply_toml(path, "[rate]\nfly = \"x\"\n").is_err());
        assert!(map.apply_toml(path, "[nowhere]\nsave = \"x\"\n").is_err());
        assert!(map.apply_toml(path, "[rate]\nsave = \"hyper\"\n").is_err());
    }

    #[test]
    fn parses_and_labels_keys() {
        for text in ["q", "Enter", "Ctrl-r", "F5", "PageDown", "Space", "Delete"] {
            let chord = KeyChord::parse(text).expect(text);
            assert_eq!(chord.label(), text);
        }
        let event = KeyEvent::new(KeyCode::Char('R'), KeyModifiers::CONTROL);
        assert_eq!(
            KeyChord::from_event(&event),
            KeyChord::parse("ctrl-r").expect("key")
        );
        assert!(KeyChord::ctrl('r').is_command());
        assert!(k(KeyCode::F(5)).is_command() && k(KeyCode::Esc).is_command());
        assert!(!c('q').is_command() && !k(KeyCode::Tab).is_command());
    }

    #[test]
    fn sql_keys_are_data() {
        let mut map = KeyMap::default();
        assert_eq!(
            map.action(View::Sql, &KeyChord::ctrl('r')),
            Some(Action::RunQuery)
        );
        assert_eq!(map.label(View::Sql, Action::ToggleWrite), "Ctrl-t");
        map.apply_toml(Path::new("k.toml"), "[sql]\nrun_query = \"f9\"\n")
            .expect("valid");
        assert_eq!(
            map.action(View::Sql, &k(KeyCode::F(9))),
            Some(Action::RunQuery)
        );
        assert_eq!(map.action(View::Sql, &KeyChord::ctrl('r')), None);
        // Every SQL action has a name the file can use.
        for binding in &map.views[&View::Sql] {
            assert!(!binding.action.name().is_empty());
        }
    }
}
