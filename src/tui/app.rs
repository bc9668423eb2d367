//! The dashboard's state and its one update function: events in, effects out.
//! Nothing here draws, touches the terminal or reads the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::imaging::preview::{Gray8, Plane};
use crate::store::dashboard::{
    AgreementGlance, DashboardSummary, ImageFacts, ImageFilter, ImagePage, PredictionInForce,
    QueueProgress, RateWork, RaterProgress, RatingInForce,
};
use crate::store::iqm_outliers::{ImageIqms, IqmGroups};
use crate::store::ratings::NewRating;

use super::images::{FilterKey, ImagesState};
use super::jobs::{JobRequest, JobsOutcome, JobsState};
use super::keys::{Action, KeyChord, KeyMap, View};
use super::rate::{RateOutcome, RateState};
use super::reports::{OperatingView, ReportsData, ReportsState, TriagePlan};
use super::sql::{Focus, SqlOutcome, SqlRequest, SqlResponse, SqlState};
use super::viewer::{LoadedVolume, ViewerState};
use crate::jobs::{InferResult, JobEvent, TrainResult};
use crate::model::train::EpochReport;
use crate::store::runs::{EpochRow, RunSummary};

/// Images fetched at once for the Rate view.
pub const RATE_BATCH: usize = 500;
/// Image details kept in memory (previews are small, but not free).
const DETAIL_CACHE: usize = 64;
/// How long quitting waits for running jobs to checkpoint and stop.
const QUIT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the store layer answers off the UI thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The summaries, with the inter-rater agreement unless blind. Without
    /// `ratings`, all but those read over every rating in force (rating progress,
    /// agreement), which follow in a second request served off the reader thread.
    Dashboard {
        agreement: bool,
        ratings: bool,
    },
    ImagePage {
        filter: ImageFilter,
        offset: usize,
        /// The list's size when an earlier page with this filter told it.
        known_total: Option<usize>,
    },
    /// Facts and previews, plus the ratings in force, predictions, queue reasons and
    /// image quality metrics unless blind.
    Detail {
        image_id: i64,
        with_ratings: bool,
    },
    RateWork {
        rater: String,
    },
    Volume {
        image_id: i64,
        path: String,
    },
    /// The agreement report and the comparison of every run.
    Reports,
    /// Both reports as HTML files beside the store.
    ExportReports,
    /// A run's calibration, operating point and triage band at `TARGETS[target]`
    /// (built on a thread of its own: it reads every prediction of the run).
    OperatingPoint {
        run_id: String,
        target: usize,
    },
    /// The unrated images in a run's triage band at `TARGETS[target]`, and the raters,
    /// for a queue (its own thread, as an operating point).
    TriagePlan {
        run_id: String,
        target: usize,
    },
    /// Served by the SQL thread (runs, cancels) or a thread of its own (exports).
    Sql(SqlRequest),
    /// The groups of the per-scanner IQM outliers, to score the selected image's
    /// metrics against, and then every image's outlier flag against them for the IQM
    /// filter of this epoch (its own thread: it reads every image's metrics).
    IqmGroups {
        epoch: u64,
    },
    /// Every run in the store, for the Jobs view.
    Runs,
    /// A stored run's epochs, for its curves.
    RunEpochs {
        run_id: String,
    },
    /// Starts the worker of a planned and recorded job (served by the job runner).
    SpawnJob {
        id: u64,
        plan: std::path::PathBuf,
    },
    /// Asks a job's worker to stop (a training run checkpoints first).
    CancelJob {
        id: u64,
    },
}

impl Request {
    /// Identifies a request so the same one is not asked twice while in flight.
    fn key(&self) -> String {
        match self {
            Request::Dashboard { ratings, .. } => format!("dashboard:{ratings}"),
            Request::ImagePage { filter, offset, .. } => format!("page:{filter:?}:{offset}"),
            Request::Detail { image_id, .. } => format!("detail:{image_id}"),
            Request::RateWork { .. } => "rate".into(),
            Request::Volume { image_id, .. } => format!("volume:{image_id}"),
            Request::Reports => "reports".into(),
            Request::ExportReports => "export-reports".into(),
            Request::OperatingPoint { run_id, target } => format!("operating:{run_id}:{target}"),
            Request::TriagePlan { run_id, target } => format!("triage:{run_id}:{target}"),
            Request::Sql(_) => "sql".into(),
            Request::IqmGroups { .. } => "iqm-groups".into(),
            Request::Runs => "runs".into(),
            Request::RunEpochs { run_id } => format!("epochs:{run_id}"),
            Request::SpawnJob { id, .. } => format!("spawn:{id}"),
            Request::CancelJob { id } => format!("cancel:{id}"),
        }
    }
}

/// One image's facts, decoded previews and (outside blind mode) ratings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail {
    pub facts: Option<ImageFacts>,
    pub previews: Vec<(Plane, Gray8)>,
    pub ratings: Option<Vec<RatingInForce>>,
    /// Every run's prediction, unless blind.
    pub predictions: Option<Vec<PredictionInForce>>,
    /// Why the image sits in each queue that holds it, unless blind (reasons come from
    /// a model's predictions).
    pub queued: Option<Vec<crate::store::queues::QueuedReason>>,
    /// The newest image quality metrics, unless blind or none are stored.
    pub iqms: Option<ImageIqms>,
}

#[derive(Debug, Clone)]
pub enum Response {
    Dashboard {
        ratings: bool,
        result: Result<Box<DashboardSummary>, String>,
    },
    ImagePage {
        filter: ImageFilter,
        offset: usize,
        result: Result<ImagePage, String>,
    },
    Detail {
        image_id: i64,
        result: Result<Arc<Detail>, String>,
    },
    RateWork(Result<RateWork, String>),
    Volume {
        image_id: i64,
        result: Result<Arc<LoadedVolume>, String>,
    },
    Reports(Result<Arc<ReportsData>, String>),
    /// The files an export wrote.
    Exported(Result<Vec<std::path::PathBuf>, String>),
    OperatingPoint {
        run_id: String,
        target: usize,
        result: Result<Arc<OperatingView>, String>,
    },
    TriagePlan {
        run_id: String,
        target: usize,
        result: Result<Arc<TriagePlan>, String>,
    },
    Sql(SqlResponse),
    IqmGroups {
        epoch: u64,
        result: Result<Arc<IqmGroups>, String>,
    },
    Runs(Result<Vec<RunSummary>, String>),
    RunEpochs {
        run_id: String,
        result: Result<Vec<EpochRow>, String>,
    },
}

impl Response {
    fn request_key(&self) -> String {
        match self {
            Response::Dashboard { ratings, .. } => format!("dashboard:{ratings}"),
            Response::ImagePage { filter, offset, .. } => format!("page:{filter:?}:{offset}"),
            Response::Detail { image_id, .. } => format!("detail:{image_id}"),
            Response::RateWork(_) => "rate".into(),
            Response::Volume { image_id, .. } => format!("volume:{image_id}"),
            Response::Reports(_) => "reports".into(),
            Response::Exported(_) => "export-reports".into(),
            Response::OperatingPoint { run_id, target, .. } => {
                format!("operating:{run_id}:{target}")
            }
            Response::TriagePlan { run_id, target, .. } => format!("triage:{run_id}:{target}"),
            Response::Sql(_) => "sql".into(),
            Response::IqmGroups { .. } => "iqm-groups".into(),
            Response::Runs(_) => "runs".into(),
            Response::RunEpochs { run_id, .. } => format!("epochs:{run_id}"),
        }
    }
}

/// Everything the loop feeds the app.
#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    Resize,
    Tick,
    Loaded(Response),
    /// A save finished: (rating id, image id) or the error.
    Saved(Result<(i64, i64), String>),
    /// An undo finished: the withdrawn (rating id, image id), if any.
    Undone(Result<Option<i64>, String>),
    /// Something for the status line (a failure of the loop's own work).
    Note(String),
    /// A job was planned and recorded (its run id, a summary and its `jobs` row), or
    /// why not.
    JobPlanned {
        id: u64,
        result: Result<(String, String, i64), String>,
    },
    /// A line of a job's worker: an event, or text for the log.
    JobOutput {
        id: u64,
        line: JobLine,
    },
    /// A job's worker ended, with its exit code (`None`: killed by a signal).
    JobExited {
        id: u64,
        code: Option<i32>,
    },
    /// A job's outcome was written to the store, or why not.
    JobRecorded(Result<(), String>),
    /// A queue was stored (what it holds), or why not.
    QueueStored(Result<String, String>),
}

/// What a job's worker said.
#[derive(Debug, Clone, PartialEq)]
pub enum JobLine {
    Event(Box<JobEvent>),
    /// Standard error, or a stray line on standard output.
    Log(String),
}

/// What the app asks the loop to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Fetch(Request),
    /// Save at once, durably, then answer with [`Event::Saved`].
    Save(NewRating),
    Undo {
        rater: String,
        rating_id: i64,
    },
    /// Append an executed query to the history file.
    RememberQuery {
        file: std::path::PathBuf,
        sql: String,
    },
    /// Plan a job on the writer, record its start, then spawn its worker; answers with
    /// [`Event::JobPlanned`].
    StartJob {
        id: u64,
        request: JobRequest,
    },
    /// Record a finished epoch of a training job.
    RecordEpoch {
        run_id: String,
        report: EpochReport,
    },
    /// Record how a training job ended.
    RecordTraining {
        run_id: String,
        result: Box<Result<TrainResult, String>>,
    },
    /// Store an inference job's predictions.
    RecordInference {
        run_id: String,
        result: Box<InferResult>,
    },
    /// Store a triage queue planned on a reader; answers with [`Event::QueueStored`].
    StoreQueue(Arc<TriagePlan>),
    /// Record how a job ended in its `jobs` row.
    FinishJob {
        job: i64,
        status: &'static str,
        progress: f64,
        error: Option<String>,
    },
    Quit,
}

type RatingCounts = (
    Vec<RaterProgress>,
    Vec<QueueProgress>,
    Option<Vec<AgreementGlance>>,
);

/// The views of blind rating mode.
const BLIND_VIEWS: [View; 4] = [View::Dashboard, View::Images, View::Viewer, View::Rate];

pub struct App {
    pub keys: KeyMap,
    pub view: View,
    pub help: bool,
    /// The rater of this session; set means blind mode.
    pub rater: Option<String>,
    pub quit: bool,
    pub message: String,
    pub dashboard: Option<Result<DashboardSummary, String>>,
    pub images: ImagesState,
    pub details: HashMap<i64, Result<Arc<Detail>, String>>,
    /// The per-scanner IQM groups the detail pane scores metrics against; never
    /// loaded in blind mode.
    pub iqm_groups: Option<Result<Arc<IqmGroups>, String>>,
    pub viewer: ViewerState,
    pub rate: RateState,
    pub reports: ReportsState,
    pub sql: SqlState,
    pub jobs: JobsState,
    in_flight: HashSet<String>,
    /// The rating and queue progress and agreement last counted, shown while newer
    /// counts are being refined.
    last_rating_counts: Option<RatingCounts>,
}

impl App {
    pub fn new(keys: KeyMap, rater: Option<String>) -> Self {
        Self {
            keys,
            view: View::Dashboard,
            help: false,
            rater,
            quit: false,
            message: String::new(),
            dashboard: None,
            images: ImagesState::default(),
            details: HashMap::new(),
            iqm_groups: None,
            viewer: ViewerState::default(),
            rate: RateState {
                min_view: super::rate::MIN_VIEW,
                ..RateState::default()
            },
            reports: ReportsState::default(),
            sql: SqlState::new(
                super::sql::saved_queries(None),
                Vec::new(),
                None,
                std::path::PathBuf::from("."),
            ),
            jobs: JobsState::default(),
            in_flight: HashSet::new(),
            last_rating_counts: None,
        }
    }

    pub fn blind(&self) -> bool {
        self.rater.is_some()
    }

    /// The views this session offers: in blind rating mode only those that show no
    /// other rater's work and no model (no SQL console, Reports or Jobs).
    pub fn views(&self) -> &'static [View] {
        if self.blind() {
            &BLIND_VIEWS
        } else {
            &View::ALL
        }
    }

    /// Keeps in blind mode only what the rater may see of a summary: their own
    /// progress and queues; no other rater's, no agreement and no model runs.
    fn blind_summary(&self, mut summary: DashboardSummary) -> DashboardSummary {
        if let Some(me) = &self.rater {
            summary.raters.retain(|r| &r.rater == me);
            summary.queues.retain(|q| &q.rater == me);
            summary.runs.clear();
            summary.agreement = None;
        }
        summary
    }

    pub fn update(&mut self, event: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::Key(key) => self.on_key(key, &mut effects),
            Event::Resize | Event::Tick => {}
            Event::Loaded(response) => self.on_loaded(response),
            Event::Saved(result) => {
                let outcome = self.rate.on_saved(result);
                self.apply_rate(outcome, &mut effects);
            }
            Event::Undone(result) => {
                let outcome = self.rate.on_undone(result);
                self.apply_rate(outcome, &mut effects);
            }
            Event::Note(text) => self.message = text,
            Event::QueueStored(result) => {
                self.message = match result {
                    Ok(text) => text,
                    Err(e) => format!("the queue was not stored: {e}"),
                };
                // Queue progress now reads differently.
                self.dashboard = None;
            }
            Event::JobPlanned { id, result } => {
                let outcome = self.jobs.on_planned(id, result);
                self.apply_jobs(outcome, &mut effects);
            }
            Event::JobOutput { id, line } => {
                let outcome = self.jobs.on_output(id, line);
                self.apply_jobs(outcome, &mut effects);
            }
            Event::JobExited { id, code } => {
                let outcome = self.jobs.on_exited(id, code);
                self.apply_jobs(outcome, &mut effects);
            }
            Event::JobRecorded(result) => {
                if let Err(e) = result {
                    self.message = format!("the job's outcome was not stored: {e}");
                }
                // Runs, the dashboard and the reports now read differently.
                self.jobs.runs = None;
                self.jobs.run_epochs = None;
                self.dashboard = None;
                self.reports.data = None;
                self.reports.operating.clear();
            }
        }
        self.check_quit(&mut effects);
        self.request_missing(&mut effects);
        effects
    }

    /// Whether the IQM outlier filter's page waits for this epoch's groups: their
    /// thread computes every image's flag right after them, off the keys' path, where
    /// the list's connection would take seconds at a million images. Should the groups
    /// fail, the list computes the flags itself.
    pub fn outlier_flags_pending(&self) -> bool {
        self.images.filter.iqm_outlier.is_some()
            && self.view == View::Images
            && !self.blind()
            && self.iqm_groups.is_none()
    }

    /// The image the Images and Viewer views are about.
    pub fn selected_image(&self) -> Option<i64> {
        self.images.selected_row().map(|r| r.image_id)
    }

    pub fn detail(&self, image_id: i64) -> Option<&Result<Arc<Detail>, String>> {
        self.details.get(&image_id)
    }

    fn on_key(&mut self, key: KeyEvent, effects: &mut Vec<Effect>) {
        if key.kind == crossterm::event::KeyEventKind::Release {
            return;
        }
        if !self.views().contains(&self.view) {
            self.view = View::Rate;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            if self.jobs.active() > 0 {
                self.stop_jobs_and_quit(effects);
            } else {
                self.quit = true;
                effects.push(Effect::Quit);
            }
            return;
        }
        if self.view == View::Jobs && self.jobs.form.is_some() {
            let sequences = self.sequences();
            let outcome = self.jobs.on_form_key(&key, &sequences);
            self.apply_jobs(outcome, effects);
            return;
        }
        if self.help {
            self.help = false;
            return;
        }
        if self.view == View::Images && self.images.search_input.is_some() {
            self.images.on_search_key(&key);
            return;
        }
        if self.view == View::Sql && self.on_sql_key(&key, effects) {
            return;
        }
        let chord = KeyChord::from_event(&key);
        match self.keys.action(self.view, &chord) {
            Some(action) => self.on_action(action, effects),
            None if self.view == View::Rate => {
                if let KeyCode::Char(c) = key.code {
                    self.rate.error = Some(format!("'{c}' is not a rating key (r k a z d)"));
                }
            }
            None => {}
        }
    }

    /// Keys of the SQL view's editor and prompts; false for keys bound as usual.
    /// The SQL view's saved-query picker and export prompt, then its editor; false when
    /// the key is the app's to handle.
    fn on_sql_key(&mut self, key: &KeyEvent, effects: &mut Vec<Effect>) -> bool {
        if let Some(outcome) = self.sql.on_prompt_key(key) {
            self.apply_sql(outcome, effects);
            return true;
        }
        if self.sql.focus != Focus::Editor {
            return false;
        }
        let chord = KeyChord::from_event(key);
        if chord.is_command() {
            if let Some(action) = self.keys.action(View::Sql, &chord) {
                self.on_action(action, effects);
            }
        } else {
            self.sql.editor.edit(key);
        }
        true
    }

    /// Carries out what the SQL view asked for.
    fn apply_sql(&mut self, outcome: SqlOutcome, effects: &mut Vec<Effect>) {
        let SqlOutcome {
            message,
            remember,
            request,
            store_changed,
        } = outcome;
        if let Some(message) = message {
            self.message = message;
        }
        if let Some((file, sql)) = remember {
            effects.push(Effect::RememberQuery { file, sql });
        }
        if let Some(request) = request {
            effects.push(Effect::Fetch(Request::Sql(request)));
        }
        if store_changed {
            // The statements may have changed what the other views show.
            self.dashboard = None;
            self.images.page = None;
            self.details.clear();
            self.iqm_groups = None;
            self.images.filter.iqm_epoch += 1;
            if self.rate.code.is_empty() {
                self.rate.work = None;
                self.rate.index = 0;
            }
        }
    }

    fn on_action(&mut self, action: Action, effects: &mut Vec<Effect>) {
        if self.view == View::Sql
            && let Some(outcome) = self.sql.on_action(action)
        {
            self.apply_sql(outcome, effects);
            return;
        }
        match action {
            Action::Quit => {
                // Quitting ends the SQL view's connection, and with it a transaction
                // the user began there: its changes would be gone without a word.
                if self.sql.transaction_open && !self.sql.quit_confirmed {
                    self.sql.quit_confirmed = true;
                    self.message = "a transaction begun in the SQL view is open: COMMIT or ROLLBACK it there; q again quits and rolls it back".into();
                    return;
                }
                let active = self.jobs.active();
                if active == 0 {
                    self.quit = true;
                    effects.push(Effect::Quit);
                } else if self.jobs.confirm_quit {
                    self.stop_jobs_and_quit(effects);
                } else {
                    self.jobs.confirm_quit = true;
                    self.message = format!(
                        "{active} job(s) running: q again stops them (training saves a checkpoint) and quits"
                    );
                }
            }
            Action::NewJob => self.open_job_form(),
            Action::CancelJob => {
                let id = match self.jobs.selection() {
                    Some(super::jobs::Selection::Job(job)) if job.status.is_active() => {
                        Some(job.id)
                    }
                    _ => None,
                };
                match id {
                    Some(id) => effects.extend(self.jobs.cancel(id)),
                    None => self.message = "the selected line is not a running job".into(),
                }
            }
            Action::Help => self.help = true,
            Action::NextTab | Action::PrevTab => {
                let views = self.views();
                let n = views.len();
                let at = views.iter().position(|v| *v == self.view).unwrap_or(0);
                let next = if action == Action::NextTab {
                    (at + 1) % n
                } else {
                    (at + n - 1) % n
                };
                self.view = views[next];
            }
            Action::Show(view) if !self.views().contains(&view) => {
                self.message = format!("{} is not available in blind rating mode", view.title());
            }
            Action::Show(view) => self.view = view,
            Action::Refresh => {
                self.dashboard = None;
                self.images.page = None;
                self.details.clear();
                self.iqm_groups = None;
                self.images.filter.iqm_epoch += 1;
                self.reports.data = None;
                self.reports.operating.clear();
                // A band picked before may hold images rated since.
                self.reports.queue_plan = None;
                if self.rate.code.is_empty() {
                    self.rate.work = None;
                    self.rate.index = 0;
                }
                self.message = "reloaded".into();
            }
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::PageUp => self.move_selection(-20),
            Action::PageDown => self.move_selection(20),
            Action::Top => self.move_selection(i64::MIN / 2),
            Action::Bottom => self.move_selection(i64::MAX / 2),
            Action::CycleSequence
            | Action::CycleStatus
            | Action::CycleRated
            | Action::Search
            | Action::ClearFilters
            | Action::CycleModel
            | Action::CycleIqm => {
                let sequences = self.sequences();
                if let FilterKey::Hidden(why) =
                    self.images
                        .on_filter_action(action, self.blind(), &sequences)
                {
                    self.message = why.into();
                }
            }
            Action::OpenViewer => self.view = View::Viewer,
            Action::NextPlane
            | Action::SliceUp
            | Action::SliceDown
            | Action::SliceUpFast
            | Action::SliceDownFast
            | Action::WindowWider
            | Action::WindowNarrower
            | Action::LevelUp
            | Action::LevelDown
            | Action::ResetWindow => {
                self.viewer.on_action(action);
            }
            Action::Code(c) => {
                let outcome = self.rate.type_code(self.rater.is_some(), c);
                self.apply_rate(outcome, effects);
            }
            Action::DeleteCodeKey => {
                self.rate.code.pop();
                self.rate.error = None;
            }
            Action::Save => {
                let outcome = self.rate.save(self.rater.as_deref());
                self.apply_rate(outcome, effects);
            }
            Action::Undo => {
                let outcome = self.rate.undo(self.rater.as_deref());
                self.apply_rate(outcome, effects);
            }
            Action::ReviewLater => self.rate.review_later = !self.rate.review_later,
            Action::CycleTask => self.reports.next_task(),
            Action::CycleTarget => self.reports.next_target(),
            Action::QueueTriage => self.queue_triage(effects),
            Action::ExportReports => {
                if self.blind() {
                    self.message = "reports are hidden in blind rating mode".into();
                } else if !self.reports.exporting {
                    self.reports.exporting = true;
                    self.message = "writing the HTML reports…".into();
                    self.fetch(Request::ExportReports, effects);
                }
            }
            Action::RunQuery
            | Action::CancelQuery
            | Action::ClearQuery
            | Action::LeaveEditor
            | Action::EditQuery
            | Action::HistoryPrev
            | Action::HistoryNext
            | Action::SavedQueries
            | Action::Export
            | Action::ToggleWrite
            | Action::ScrollLeft
            | Action::ScrollRight => {}
            Action::NextImage | Action::PrevImage => {
                let forward = action == Action::NextImage;
                if self.view == View::Viewer {
                    self.move_selection(if forward { 1 } else { -1 });
                } else {
                    let len = self.rate.work.as_ref().map_or(0, Vec::len);
                    let index = if forward {
                        (self.rate.index + 1).min(len.saturating_sub(1))
                    } else {
                        self.rate.index.saturating_sub(1)
                    };
                    if index != self.rate.index {
                        self.rate.index = index;
                        self.rate.reset_pending_code();
                    }
                }
            }
        }
    }

    fn move_selection(&mut self, delta: i64) {
        if self.view == View::Jobs {
            self.jobs.move_selection(delta);
            return;
        }
        if self.view == View::Reports {
            self.reports.move_selection(delta);
            return;
        }
        self.images.move_selection(delta);
    }

    /// The first press picks the selected run's triage band in the background and says
    /// what a queue would hold; a second press on the same run and target stores it.
    fn queue_triage(&mut self, effects: &mut Vec<Effect>) {
        if self.blind() {
            self.message = "queues are made outside blind rating mode".into();
            return;
        }
        let Some(run_id) = self.reports.selected_run() else {
            self.message = "no run selected".into();
            return;
        };
        let key = (run_id.clone(), self.reports.target);
        match self.reports.queue_plan.take() {
            Some((planned, Ok(plan))) if planned == key => {
                self.message = format!("storing queue {}…", plan.name);
                effects.push(Effect::StoreQueue(plan));
            }
            _ => {
                self.message = format!(
                    "picking run {run_id}'s unrated images in the triage band at {:.2}…",
                    self.reports.target()
                );
                let target = self.reports.target;
                self.fetch(Request::TriagePlan { run_id, target }, effects);
            }
        }
    }

    /// Carries out what the Rate view asked for.
    fn apply_rate(&mut self, outcome: RateOutcome, effects: &mut Vec<Effect>) {
        let RateOutcome {
            message,
            save,
            rated_image,
            undo,
        } = outcome;
        if let Some(message) = message {
            self.message = message;
        }
        if let Some(rating) = save {
            effects.push(Effect::Save(rating));
        }
        if let (Some(rating_id), Some(rater)) = (undo, &self.rater) {
            effects.push(Effect::Undo {
                rater: rater.clone(),
                rating_id,
            });
        }
        if let Some(image_id) = rated_image {
            self.after_ratings_changed(image_id);
        }
    }

    fn after_ratings_changed(&mut self, image_id: i64) {
        self.dashboard = None;
        self.images.page = None;
        if !self.blind() {
            self.details.remove(&image_id);
        }
    }

    fn on_loaded(&mut self, response: Response) {
        self.in_flight.remove(&response.request_key());
        match response {
            Response::Dashboard { result, .. } => {
                let result = result.map(|b| self.blind_summary(*b));
                self.dashboard = Some(match result {
                    // Until the refined counts come, the last ones counted show,
                    // marked as being refined.
                    Ok(mut summary) if summary.refining => {
                        if let Some((raters, queues, agreement)) = &self.last_rating_counts {
                            summary.raters.clone_from(raters);
                            summary.queues.clone_from(queues);
                            summary.agreement.clone_from(agreement);
                        }
                        Ok(summary)
                    }
                    Ok(summary) => {
                        self.last_rating_counts = Some((
                            summary.raters.clone(),
                            summary.queues.clone(),
                            summary.agreement.clone(),
                        ));
                        Ok(summary)
                    }
                    Err(e) => Err(e),
                });
            }
            Response::ImagePage { filter, result, .. } => {
                if filter != self.images.filter {
                    return;
                }
                let blind = self.blind();
                self.images.on_page(result, blind);
            }
            Response::Detail { image_id, result } => {
                if self.details.len() >= DETAIL_CACHE {
                    let keep = [self.selected_image(), self.rate.current()];
                    self.details.retain(|id, _| keep.contains(&Some(*id)));
                }
                self.details.insert(image_id, result);
            }
            Response::Reports(result) => self.reports.data = Some(result),
            // Groups of an earlier epoch (read before a refresh) are not this one's.
            Response::IqmGroups { epoch, result } => {
                if epoch == self.images.filter.iqm_epoch {
                    self.iqm_groups = Some(result);
                }
            }
            Response::OperatingPoint {
                run_id,
                target,
                result,
            } => {
                self.reports.operating.insert((run_id, target), result);
            }
            Response::TriagePlan {
                run_id,
                target,
                result,
            } => {
                let key = self.keys.label(View::Reports, Action::QueueTriage);
                self.message = match &result {
                    Ok(plan) => format!("{} · {key} again stores it", plan.describe()),
                    Err(e) => format!("no triage queue: {e}"),
                };
                self.reports.queue_plan = Some(((run_id, target), result));
            }
            Response::Exported(result) => {
                self.reports.exporting = false;
                self.message = match result {
                    Ok(files) if files.is_empty() => "nothing to export".into(),
                    Ok(files) => format!(
                        "wrote {}",
                        files
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Err(err) => format!("export failed: {err}"),
                };
            }
            Response::RateWork(result) => match result {
                Ok(work) => {
                    self.rate.from_queue = work.from_queue;
                    self.rate.queues = work.queues;
                    self.rate.work = Some(work.image_ids);
                    self.rate.index = 0;
                }
                Err(err) => {
                    self.rate.error = Some(err);
                    self.rate.work = Some(Vec::new());
                }
            },
            Response::Volume { image_id, result } => {
                if self.viewer.image_id != Some(image_id) {
                    return;
                }
                match result {
                    Ok(volume) => {
                        self.viewer.slice = volume.ras_dims.map(|d| d / 2);
                        self.viewer.window = volume.window;
                        self.viewer.volume = Some(volume);
                        self.viewer.error = None;
                    }
                    Err(err) => self.viewer.error = Some(err),
                }
            }
            Response::Sql(response) => {
                // A response only reports: it asks the worker for nothing more.
                let outcome = self.sql.on_response(response);
                self.apply_sql(outcome, &mut Vec::new());
            }
            Response::Runs(result) => {
                self.jobs.runs = Some(result);
                let len = self.jobs.len();
                if self.jobs.selected >= len {
                    self.jobs.selected = len.saturating_sub(1);
                }
            }
            Response::RunEpochs { run_id, result } => {
                self.jobs.run_epochs = Some((run_id, result));
            }
        }
    }

    /// Opens the form, or says why jobs cannot run here.
    fn open_job_form(&mut self) {
        if self.blind() {
            self.message = "jobs are hidden in blind rating mode".into();
            return;
        }
        if self.jobs.quitting.is_some() {
            return;
        }
        self.jobs.form = Some(self.jobs.form.take().unwrap_or_default());
    }

    /// The sequences the store holds, for the inference form.
    pub fn sequences(&self) -> Vec<String> {
        self.dashboard
            .as_ref()
            .and_then(|d| d.as_ref().ok())
            .map(|d| {
                let mut names: Vec<String> = d
                    .sequences
                    .iter()
                    .map(|s| s.sequence.clone())
                    .filter(|s| s != "(none)")
                    .collect();
                names.dedup();
                names
            })
            .unwrap_or_default()
    }

    /// Stops every running job; the dashboard quits once they have ended.
    fn stop_jobs_and_quit(&mut self, effects: &mut Vec<Effect>) {
        let outcome = self.jobs.stop_all();
        self.apply_jobs(outcome, effects);
    }

    /// Carries out what the Jobs view asked for.
    fn apply_jobs(&mut self, outcome: JobsOutcome, effects: &mut Vec<Effect>) {
        let JobsOutcome {
            message,
            effects: asked,
            runs_changed,
        } = outcome;
        if let Some(message) = message {
            self.message = message;
        }
        effects.extend(asked);
        if runs_changed {
            self.dashboard = None;
        }
    }

    /// Quits once the jobs stopped for quitting have ended, or after a grace period.
    fn check_quit(&mut self, effects: &mut Vec<Effect>) {
        if let Some(since) = self.jobs.quitting
            && !self.quit
            && (self.jobs.active() == 0 || since.elapsed() > QUIT_GRACE)
        {
            self.quit = true;
            effects.push(Effect::Quit);
        }
    }

    fn fetch(&mut self, request: Request, effects: &mut Vec<Effect>) {
        if self.in_flight.insert(request.key()) {
            effects.push(Effect::Fetch(request));
        }
    }

    fn want_detail(&mut self, image_id: i64, effects: &mut Vec<Effect>) {
        if !self.details.contains_key(&image_id) {
            let with_ratings = !self.blind();
            self.fetch(
                Request::Detail {
                    image_id,
                    with_ratings,
                },
                effects,
            );
        }
    }

    /// Asks for whatever the current view needs and does not have yet.
    fn request_missing(&mut self, effects: &mut Vec<Effect>) {
        let agreement = !self.blind();
        if self.dashboard.is_none() && matches!(self.view, View::Dashboard | View::Images) {
            self.fetch(
                Request::Dashboard {
                    agreement,
                    ratings: false,
                },
                effects,
            );
        }
        if let Some(Ok(summary)) = &self.dashboard
            && summary.refining
        {
            self.fetch(
                Request::Dashboard {
                    agreement,
                    ratings: true,
                },
                effects,
            );
        }
        if matches!(self.view, View::Images | View::Viewer) {
            let offset = self.images.page_offset();
            let covered = self
                .images
                .page
                .as_ref()
                .is_some_and(|p| p.offset == offset || p.total == 0);
            if !covered && !self.outlier_flags_pending() {
                let filter = self.images.filter.clone();
                let known_total = self.images.page.as_ref().map(|p| p.total);
                self.fetch(
                    Request::ImagePage {
                        filter,
                        offset,
                        known_total,
                    },
                    effects,
                );
            }
            if let Some(image_id) = self.selected_image() {
                self.want_detail(image_id, effects);
            }
        }
        if self.view == View::Images && !self.blind() && self.iqm_groups.is_none() {
            let epoch = self.images.filter.iqm_epoch;
            self.fetch(Request::IqmGroups { epoch }, effects);
        }
        if self.view == View::Viewer {
            self.request_volume(effects);
        }
        if self.view == View::Reports && self.reports.data.is_none() && !self.blind() {
            self.fetch(Request::Reports, effects);
        }
        if self.view == View::Reports
            && !self.blind()
            && self.reports.operating_view().is_none()
            && let Some(run_id) = self.reports.selected_run()
        {
            let target = self.reports.target;
            self.fetch(Request::OperatingPoint { run_id, target }, effects);
        }
        if self.view == View::Jobs && !self.blind() {
            if self.jobs.runs.is_none() {
                self.fetch(Request::Runs, effects);
            }
            // The form offers the store's sequences.
            if self.dashboard.is_none() {
                self.fetch(
                    Request::Dashboard {
                        agreement: !self.blind(),
                        ratings: false,
                    },
                    effects,
                );
            }
            if let Some(super::jobs::Selection::Run(run)) = self.jobs.selection() {
                let run_id = run.run_id.clone();
                let loaded = matches!(&self.jobs.run_epochs, Some((id, _)) if *id == run_id);
                if !loaded {
                    self.fetch(Request::RunEpochs { run_id }, effects);
                }
            }
        }
        if self.view == View::Rate {
            if let Some(rater) = self.rater.clone()
                && self.rate.work.is_none()
            {
                self.fetch(Request::RateWork { rater }, effects);
            }
            if let Some(current) = self.rate.current() {
                self.want_detail(current, effects);
                // Previews, or the reason they failed, are on screen.
                if self.details.contains_key(&current)
                    && self.rate.shown.is_none_or(|(id, _)| id != current)
                {
                    self.rate.shown = Some((current, Instant::now()));
                }
                let next = self
                    .rate
                    .work
                    .as_ref()
                    .and_then(|w| w.get(self.rate.index + 1))
                    .copied();
                if let Some(next) = next {
                    self.want_detail(next, effects);
                }
            }
        }
    }

    fn request_volume(&mut self, effects: &mut Vec<Effect>) {
        let Some(image_id) = self.selected_image() else {
            return;
        };
        if self.viewer.image_id == Some(image_id) {
            return;
        }
        let path = match self.details.get(&image_id) {
            Some(Ok(detail)) => detail.facts.as_ref().map(|f| f.path.clone()),
            _ => return,
        };
        self.viewer.image_id = Some(image_id);
        self.viewer.volume = None;
        self.viewer.error = None;
        match path {
            Some(path) => self.fetch(Request::Volume { image_id, path }, effects),
            None => self.viewer.error = Some(format!("image {image_id} is not in the store")),
        }
    }
}
