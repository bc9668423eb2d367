//! `cdwqc tui`: the terminal dashboard. One event loop feeds terminal keys, ticks and
//! background results to [`app::App`]; a reader thread with its own connection
//! answers store reads; saves run on the loop's writer, durable before the next image.
//! SQL typed by the user runs on a third thread with its own connection, so a long
//! query never holds up the other views and can be interrupted. Training and inference
//! jobs are planned and recorded on the writer and run in child processes (`cdwqc job`),
//! whose output lines come back as events.

pub mod app;
pub mod graphics;
pub mod images;
pub mod jobs;
pub mod keys;
pub mod rate;
pub mod reports;
pub mod sql;
pub mod ui;
pub mod viewer;

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::imaging::preview::{Gray8, Plane, display_window};
use crate::imaging::{load_volume, orientation::RasView};
use crate::store::dashboard::DashboardSummary;
use crate::store::{Access, Store, StoreError};

use crate::jobs::plan::{
    PlanError, plan_inference, plan_training, record_epoch, record_inference, record_start,
    record_training,
};
use crate::jobs::{JobEvent, JobPlan, cache_dir, runs_dir};
use app::{App, Detail, Effect, Event, JobLine, Request, Response};
use graphics::{Graphics, GraphicsMode};
use jobs::JobRequest;
use keys::{KeyMap, View};
use viewer::LoadedVolume;

/// How often the loop wakes without input, so background results show promptly.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    #[error("rater {0:?} is not in the store: add them with `cdwqc raters add {0}`")]
    UnknownRater(String),
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Answers one read request from the store (or, for volumes, the file system).
pub fn serve(store: &Store, request: Request) -> Response {
    let text = |e: StoreError| e.to_string();
    match request {
        Request::Dashboard { agreement, ratings } => Response::Dashboard {
            ratings,
            result: dashboard(store, agreement, ratings).map(Box::new),
        },
        Request::ImagePage {
            filter,
            offset,
            known_total,
        } => {
            let result = store
                .image_page(&filter, offset, images::PAGE_SIZE, known_total)
                .map_err(text);
            Response::ImagePage {
                filter,
                offset,
                result,
            }
        }
        Request::Detail {
            image_id,
            with_ratings,
        } => Response::Detail {
            image_id,
            result: load_detail(store, image_id, with_ratings).map(Arc::new),
        },
        Request::RateWork { rater } => {
            Response::RateWork(store.rate_work(&rater, app::RATE_BATCH).map_err(text))
        }
        Request::Volume { image_id, path } => Response::Volume {
            image_id,
            result: load_viewer_volume(Path::new(&path)),
        },
        Request::Reports => Response::Reports(reports::load(store).map(Arc::new)),
        Request::ExportReports => Response::Exported(reports::export(store)),
        Request::OperatingPoint { run_id, target } => Response::OperatingPoint {
            result: reports::operating_view(store, &run_id, target).map(Arc::new),
            run_id,
            target,
        },
        Request::TriagePlan { run_id, target } => Response::TriagePlan {
            result: reports::triage_plan(store, &run_id, target).map(Arc::new),
            run_id,
            target,
        },
        Request::Sql(request) => Response::Sql(sql::serve(store, request)),
        Request::IqmGroups { epoch } => Response::IqmGroups {
            epoch,
            result: store
                .iqm_groups_with_shared_flags(epoch)
                .map(Arc::new)
                .map_err(text),
        },
        Request::Runs => Response::Runs(store.runs().map_err(text)),
        Request::RunEpochs { run_id } => Response::RunEpochs {
            result: store.run_epochs(&run_id).map_err(text),
            run_id,
        },
        // The job runner serves these; a reader never starts processes.
        Request::SpawnJob { id, .. } | Request::CancelJob { id } => Response::Runs(Err(format!(
            "job {id}: jobs are started by the dashboard's job runner"
        ))),
    }
}

/// Plans a job on the writer, records its start (the run, its split and a `jobs` row)
/// and writes the plan for the worker: (run id, summary, jobs row, plan file).
fn start_job(
    writer: &mut Store,
    request: &JobRequest,
) -> Result<(String, String, i64, PathBuf), String> {
    let (run_id, summary, plan) = plan_job(writer, request)?;
    let kind = match request {
        JobRequest::Train(_) => "train",
        JobRequest::Infer(_) => "infer",
    };
    let args = serde_json::json!(["job", plan.display().to_string()]).to_string();
    let job = writer
        .begin_job(kind, &args, &run_id)
        .map_err(|e| e.to_string())?;
    Ok((run_id, summary, job, plan))
}

fn plan_job(writer: &mut Store, request: &JobRequest) -> Result<(String, String, PathBuf), String> {
    let text = |e: PlanError| e.to_string();
    match request {
        JobRequest::Train(request) => {
            let planned =
                plan_training(writer, request, &runs_dir(), Some(cache_dir())).map_err(text)?;
            record_start(writer, &planned).map_err(text)?;
            let plan = planned.plan.clone();
            let file = plan.run_dir.join("job.json");
            let run_id = plan.run_id.clone();
            JobPlan::Train(Box::new(plan))
                .write(&file)
                .map_err(|e| e.to_string())?;
            Ok((run_id, planned.summary, file))
        }
        JobRequest::Infer(request) => {
            let plan =
                plan_inference(writer, request, &runs_dir(), Some(cache_dir())).map_err(text)?;
            let file = runs_dir()
                .join(&plan.run_id)
                .join(format!("infer-{}.json", plan.sequence));
            let summary = format!(
                "{}: predicting {} {} images",
                plan.run_id,
                plan.items.len(),
                plan.sequence
            );
            let run_id = plan.run_id.clone();
            JobPlan::Infer(Box::new(plan))
                .write(&file)
                .map_err(|e| e.to_string())?;
            Ok((run_id, summary, file))
        }
    }
}

fn dashboard(store: &Store, agreement: bool, ratings: bool) -> Result<DashboardSummary, String> {
    let mut summary = store
        .dashboard_summary(ratings)
        .map_err(|e| e.to_string())?;
    if agreement && ratings {
        summary.agreement =
            Some(crate::report::agreement::at_a_glance(store).map_err(|e| e.to_string())?);
    }
    Ok(summary)
}

fn load_detail(store: &Store, image_id: i64, with_ratings: bool) -> Result<Detail, String> {
    let text = |e: StoreError| e.to_string();
    let facts = store.image_facts(image_id).map_err(text)?;
    let mut previews = Vec::new();
    for (plane, png) in store.image_previews(image_id).map_err(text)? {
        let Some(plane) = Plane::parse(&plane) else {
            continue;
        };
        // A damaged preview is left out rather than failing the whole pane.
        if let Ok(picture) = Gray8::from_png(&png) {
            previews.push((plane, picture));
        }
    }
    previews.sort_by_key(|(plane, _)| Plane::ALL.iter().position(|p| p == plane));
    // Blind mode reads none of these: the metrics neither (docs/iqm.md says why).
    let (ratings, predictions, queued, iqms) = if with_ratings {
        (
            Some(store.image_ratings(image_id).map_err(text)?),
            Some(store.image_predictions(image_id).map_err(text)?),
            Some(store.queued_reasons(image_id).map_err(text)?),
            store.image_iqms(image_id).map_err(text)?,
        )
    } else {
        (None, None, None, None)
    };
    Ok(Detail {
        facts,
        previews,
        ratings,
        predictions,
        queued,
        iqms,
    })
}

fn load_viewer_volume(path: &Path) -> Result<Arc<LoadedVolume>, String> {
    let volume = load_volume(path).map_err(|e| e.to_string())?;
    let window = display_window(&volume.data);
    let ras_dims = RasView::from_affine(&volume.affine).dims(volume.dims);
    Ok(Arc::new(LoadedVolume {
        volume,
        window,
        ras_dims,
    }))
}

/// Handles one event and everything it leads to: saves and undos run at once on the
/// writer (so a saved rating is durable before anything else shows); reads go to
/// `fetch`.
pub fn handle(app: &mut App, writer: &mut Store, event: Event, fetch: &mut dyn FnMut(Request)) {
    let mut queue = VecDeque::from([event]);
    while let Some(event) = queue.pop_front() {
        for effect in app.update(event) {
            execute(writer, effect, &mut queue, fetch);
        }
    }
}

fn execute(
    writer: &mut Store,
    effect: Effect,
    queue: &mut VecDeque<Event>,
    fetch: &mut dyn FnMut(Request),
) {
    match effect {
        Effect::Fetch(request) => fetch(request),
        Effect::Save(rating) => {
            let image_id = rating.image_id;
            let result = writer
                .save_ratings(std::slice::from_ref(&rating))
                .map_err(|e| e.to_string())
                .and_then(|ids| {
                    ids.first()
                        .map(|id| (*id, image_id))
                        .ok_or_else(|| "the store returned no rating id".to_string())
                });
            queue.push_back(Event::Saved(result));
        }
        Effect::Undo { rater, rating_id } => {
            let result = writer
                .undo_rating(&rater, rating_id, "tui")
                .map_err(|e| e.to_string());
            queue.push_back(Event::Undone(result));
        }
        Effect::RememberQuery { file, sql } => {
            if let Err(e) = sql::append_history(&file, &sql) {
                queue.push_back(Event::Note(format!(
                    "query history not saved to {}: {e}",
                    file.display()
                )));
            }
        }
        Effect::StartJob { id, request } => match start_job(writer, &request) {
            Ok((run_id, summary, job, plan)) => {
                queue.push_back(Event::JobPlanned {
                    id,
                    result: Ok((run_id, summary, job)),
                });
                fetch(Request::SpawnJob { id, plan });
            }
            Err(e) => queue.push_back(Event::JobPlanned { id, result: Err(e) }),
        },
        Effect::RecordEpoch { run_id, report } => {
            if let Err(e) = record_epoch(writer, &run_id, &report) {
                queue.push_back(Event::Note(format!(
                    "epoch {} of {run_id} not stored: {e}",
                    report.epoch
                )));
            }
        }
        Effect::RecordTraining { run_id, result } => {
            let recorded = record_training(writer, &run_id, &result).map_err(|e| e.to_string());
            queue.push_back(Event::JobRecorded(recorded));
        }
        Effect::RecordInference { run_id, result } => {
            let recorded = record_inference(writer, &run_id, &result).map_err(|e| e.to_string());
            queue.push_back(Event::JobRecorded(recorded));
        }
        Effect::FinishJob {
            job,
            status,
            progress,
            error,
        } => {
            if let Err(e) = writer.finish_job(job, status, progress, error.as_deref()) {
                queue.push_back(Event::Note(format!(
                    "job {job} not recorded as {status}: {e}"
                )));
            }
        }
        Effect::StoreQueue(plan) => {
            let stored = reports::store_triage_queue(writer, &plan);
            queue.push_back(Event::QueueStored(stored));
        }
        Effect::Quit => {}
    }
}

/// Handles an event and serves every read it causes at once, on this thread: for
/// tests and benchmarks, which drive the app without a terminal.
pub fn handle_now(app: &mut App, store: &mut Store, event: Event) {
    let mut requests = VecDeque::new();
    handle(app, store, event, &mut |r| requests.push_back(r));
    while let Some(request) = requests.pop_front() {
        // Jobs run in this process, to their end, instead of in a worker.
        if let Request::SpawnJob { id, plan } = &request {
            let id = *id;
            let mut events = Vec::new();
            match JobPlan::read(plan) {
                Ok(plan) => crate::jobs::run(&plan, &Arc::new(AtomicBool::new(false)), &mut |e| {
                    events.push(e)
                }),
                Err(e) => events.push(JobEvent::Failed {
                    error: e.to_string(),
                }),
            }
            let lines = events
                .into_iter()
                .map(|e| Event::JobOutput {
                    id,
                    line: JobLine::Event(Box::new(e)),
                })
                .chain([Event::JobExited { id, code: Some(0) }]);
            for event in lines {
                handle(app, store, event, &mut |r| requests.push_back(r));
            }
            continue;
        }
        if let Request::CancelJob { .. } = request {
            continue;
        }
        let response = serve(store, request);
        handle(app, store, Event::Loaded(response), &mut |r| {
            requests.push_back(r)
        });
    }
}

/// Runs the dashboard on the terminal until the user quits.
pub fn run(db: &Path, rater: Option<String>, graphics: GraphicsMode) -> Result<(), TuiError> {
    let keys = KeyMap::load()?;
    let mut writer = Store::open(db, Access::ReadWrite)?;
    if let Some(name) = &rater
        && !writer.raters()?.iter().any(|r| &r.name == name)
    {
        return Err(TuiError::UnknownRater(name.clone()));
    }
    let reader = writer.reader()?;
    let counter = writer.reader()?;
    // No DuckDB file access for any connection of this process (the dashboard reads
    // volumes without DuckDB, and exports are written by cdwqc itself).
    crate::query::close_file_access(&writer)?;
    let project = crate::query::project_dir(db);
    let mut app = App::new(keys, rater);
    // Blind rating mode has no SQL console: no connection is even opened for one.
    let console = if app.blind() {
        None
    } else {
        Some(writer.reader()?)
    };
    if app.blind() {
        app.view = View::Rate;
    } else {
        // This process holds the store for writing, so no job can be running now. A
        // blind session writes nothing but the rater's own ratings.
        let stale = writer.interrupt_stale_runs()?;
        if stale > 0 {
            app.message = format!(
                "{stale} run(s) left running by a process that ended are marked interrupted (resume them with cdwqc train --resume RUN)"
            );
        }
        let history_file = sql::history_path();
        let history = history_file
            .as_deref()
            .map(sql::load_history)
            .unwrap_or_default();
        app.sql = sql::SqlState::new(
            sql::saved_queries(Some(Path::new("sql/queries"))),
            history,
            history_file,
            project,
        );
    }

    let (events_tx, events) = mpsc::channel::<Event>();
    let workers = Workers {
        reader: spawn_reader(reader, events_tx.clone()),
        counts: spawn_reader(counter, events_tx.clone()),
        interrupt: console.as_ref().map(|c| c.conn().interrupt_handle()),
        sql: console.map(|c| spawn_sql(c, events_tx.clone())),
        events: events_tx.clone(),
        jobs: JobRunner::new(events_tx.clone()),
    };

    // ratatui::try_init installs a panic hook that restores the terminal first.
    let mut terminal = ratatui::try_init()?;
    // The graphics query needs raw mode and reads the terminal's answer from standard
    // input, so it runs before the input thread starts reading keys.
    let mut graphics = Graphics::detect(graphics);
    spawn_input(events_tx);
    let outcome = event_loop(
        &mut terminal,
        &mut app,
        &mut writer,
        &events,
        &workers,
        &mut graphics,
    );
    ratatui::restore();
    // A query still running would only delay the exit.
    if let Some(interrupt) = &workers.interrupt {
        interrupt.interrupt();
    }
    outcome
}

/// Where the loop sends requests.
struct Workers {
    reader: Sender<Request>,
    /// Counts over every rating in force, on a connection of their own so that the
    /// keys served by `reader` never wait for them.
    counts: Sender<Request>,
    /// The SQL console's thread and its interrupt; none in blind rating mode.
    sql: Option<Sender<sql::SqlRequest>>,
    interrupt: Option<Arc<duckdb::InterruptHandle>>,
    events: Sender<Event>,
    jobs: JobRunner,
}

/// Starts job workers as child processes of this binary and turns what they print
/// into events; stops them with SIGINT, which a training worker answers with a
/// checkpoint.
struct JobRunner {
    events: Sender<Event>,
    /// Process ids of the workers still running, by job.
    running: Arc<Mutex<HashMap<u64, u32>>>,
}

impl JobRunner {
    fn new(events: Sender<Event>) -> Self {
        Self {
            events,
            running: Arc::default(),
        }
    }

    fn spawn(&self, id: u64, plan: &Path) {
        let output = move |line: JobLine| Event::JobOutput { id, line };
        let failed =
            move |error: String| output(JobLine::Event(Box::new(JobEvent::Failed { error })));
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                let _ = self
                    .events
                    .send(failed(format!("cannot find this program: {e}")));
                return;
            }
        };
        let mut command = std::process::Command::new(exe);
        command
            .arg("job")
            .arg(plan)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // Its own process group: a signal meant for the dashboard's terminal does not
        // reach the worker; only the dashboard stops it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = self
                    .events
                    .send(failed(format!("starting the worker: {e}")));
                return;
            }
        };
        if let Ok(mut running) = self.running.lock() {
            running.insert(id, child.id());
        }
        if let Some(stderr) = child.stderr.take() {
            let events = self.events.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if events.send(output(JobLine::Log(line))).is_err() {
                        return;
                    }
                }
            });
        }
        let stdout = child.stdout.take();
        let events = self.events.clone();
        let running = Arc::clone(&self.running);
        std::thread::spawn(move || {
            if let Some(stdout) = stdout {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let line = match crate::jobs::parse_event(&line) {
                        Some(event) => JobLine::Event(Box::new(event)),
                        None => JobLine::Log(line),
                    };
                    let _ = events.send(output(line));
                }
            }
            let code = child.wait().ok().and_then(|status| status.code());
            if let Ok(mut running) = running.lock() {
                running.remove(&id);
            }
            let _ = events.send(Event::JobExited { id, code });
        });
    }

    fn cancel(&self, id: u64) {
        let pid = self.running.lock().ok().and_then(|r| r.get(&id).copied());
        if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill has no memory effects; the pid is our own child's, removed
            // from the map once it has been waited for.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
    }
}

impl Workers {
    fn send(&self, request: Request) {
        // The workers only stop when the loop ends; a failed send loses nothing.
        match request {
            Request::Sql(sql::SqlRequest::Cancel) => {
                if let Some(interrupt) = &self.interrupt {
                    interrupt.interrupt();
                }
            }
            Request::Sql(export @ sql::SqlRequest::Export { .. }) => {
                let events = self.events.clone();
                std::thread::spawn(move || {
                    let response = sql::serve_export(export);
                    let _ = events.send(Event::Loaded(Response::Sql(response)));
                });
            }
            Request::Sql(run) => {
                if let Some(sql) = &self.sql {
                    let _ = sql.send(run);
                }
            }
            Request::SpawnJob { id, plan } => self.jobs.spawn(id, &plan),
            counts @ Request::Dashboard { ratings: true, .. } => {
                let _ = self.counts.send(counts);
            }
            Request::CancelJob { id } => self.jobs.cancel(id),
            other => {
                let _ = self.reader.send(other);
            }
        }
    }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    writer: &mut Store,
    events: &Receiver<Event>,
    workers: &Workers,
    graphics: &mut Graphics,
) -> Result<(), TuiError> {
    let mut fetch = |request: Request| workers.send(request);
    // The first Tick asks for what the first view needs.
    handle(app, writer, Event::Tick, &mut fetch);
    while !app.quit {
        terminal.draw(|frame| ui::draw_with(frame, app, graphics))?;
        let event = match events.recv_timeout(TICK) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => Event::Tick,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        handle(app, writer, event, &mut fetch);
    }
    Ok(())
}

/// The reader thread: owns a read connection and answers requests in order; volumes
/// load on their own threads since they take seconds.
fn spawn_reader(reader: Store, events: Sender<Event>) -> Sender<Request> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::spawn(move || {
        while let Ok(request) = rx.recv() {
            if let Request::Volume { .. } = request {
                let events = events.clone();
                std::thread::spawn(move || {
                    // The loop may have ended meanwhile; nothing waits for this then.
                    let _ = events.send(Event::Loaded(serve_volume(request)));
                });
                continue;
            }
            // An operating point or a triage band reads every prediction of a run, the
            // IQM groups every image's metrics: on a connection and thread of their
            // own, so the reads behind other keys never wait for them.
            if matches!(
                request,
                Request::OperatingPoint { .. }
                    | Request::TriagePlan { .. }
                    | Request::IqmGroups { .. }
            ) {
                match reader.reader() {
                    Ok(own) => {
                        let events = events.clone();
                        std::thread::spawn(move || {
                            // A panic must still answer, or the request stays in flight
                            // and what waits on it (the IQM filter) waits for good.
                            let asked = request.clone();
                            let response =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    serve(&own, request)
                                }))
                                .unwrap_or_else(|_| {
                                    failed_own_read(asked, "internal error while reading".into())
                                });
                            let _ = events.send(Event::Loaded(response));
                        });
                    }
                    Err(e) => {
                        let failed = failed_own_read(request, e.to_string());
                        if events.send(Event::Loaded(failed)).is_err() {
                            return;
                        }
                    }
                }
                continue;
            }
            if events.send(Event::Loaded(serve(&reader, request))).is_err() {
                return;
            }
        }
    });
    tx
}

/// The SQL thread: runs the user's queries one at a time on its own connection.
fn spawn_sql(console: Store, events: Sender<Event>) -> Sender<sql::SqlRequest> {
    let (tx, rx) = mpsc::channel::<sql::SqlRequest>();
    std::thread::spawn(move || {
        while let Ok(request) = rx.recv() {
            let response = sql::serve(&console, request);
            if events.send(Event::Loaded(Response::Sql(response))).is_err() {
                return;
            }
        }
    });
    tx
}

/// The answer to a request that could not get a connection of its own.
fn failed_own_read(request: Request, error: String) -> Response {
    match request {
        Request::TriagePlan { run_id, target } => Response::TriagePlan {
            run_id,
            target,
            result: Err(error),
        },
        Request::OperatingPoint { run_id, target } => Response::OperatingPoint {
            run_id,
            target,
            result: Err(error),
        },
        Request::IqmGroups { epoch } => Response::IqmGroups {
            epoch,
            result: Err(error),
        },
        _ => Response::Runs(Err(error)),
    }
}

fn serve_volume(request: Request) -> Response {
    match request {
        Request::Volume { image_id, path } => Response::Volume {
            image_id,
            result: load_viewer_volume(Path::new(&path)),
        },
        _ => Response::Volume {
            image_id: -1,
            result: Err("not a volume request".into()),
        },
    }
}

fn spawn_input(events: Sender<Event>) {
    std::thread::spawn(move || {
        loop {
            let event = match crossterm::event::read() {
                Ok(crossterm::event::Event::Key(key)) => Event::Key(key),
                Ok(crossterm::event::Event::Resize(..)) => Event::Resize,
                Ok(_) => continue,
                Err(_) => return,
            };
            if events.send(event).is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests;
