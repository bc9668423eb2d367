//! The Jobs view's state: the new-job form, the jobs of this session with their
//! progress, curves and log, and the runs already in the store; what the form's keys
//! and the workers' reports do to them (reported to the app as a [`JobsOutcome`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent};

use super::app::{Effect, JobLine, Request};

use crate::jobs::plan::{InferRequest, TrainRequest};
use crate::jobs::{InferResult, JobEvent, TrainResult};
use crate::model::train::{EpochReport, Method, TrainStatus};
use crate::report::agreement::Task;
use crate::store::runs::{EpochRow, RunSummary};

/// Log lines kept per job.
const LOG_LINES: usize = 200;
/// The presets the form offers, smallest grid first.
pub const PRESETS: [&str; 5] = ["demo", "tiny", "cpu-small", "paper", "pretrained"];
/// Tasks a model is trained for.
pub const TASKS: [Task; 2] = [Task::Usable, Task::Quality];

/// What a job does.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    Train(TrainRequest),
    Infer(InferRequest),
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    /// Planned and recorded; the worker is starting.
    Starting,
    Running,
    /// Asked to stop; a training job checkpoints first.
    Stopping,
    Completed,
    /// Stopped by the user; a training run can be resumed.
    Interrupted,
    Failed(String),
}

impl JobStatus {
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            JobStatus::Starting | JobStatus::Running | JobStatus::Stopping
        )
    }

    pub fn label(&self) -> &'static str {
        match self {
            JobStatus::Starting => "starting",
            JobStatus::Running => "running",
            JobStatus::Stopping => "stopping",
            JobStatus::Completed => "completed",
            JobStatus::Interrupted => "interrupted",
            JobStatus::Failed(_) => "failed",
        }
    }
}

/// One job started from the dashboard.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub run_id: String,
    /// E.g. "train usable ssda (demo, 5 epochs)".
    pub title: String,
    pub training: bool,
    pub status: JobStatus,
    pub started: Instant,
    pub finished: Option<Instant>,
    pub device: Option<String>,
    /// Training: (epoch in progress, total epochs), 1-based.
    pub epoch: (usize, usize),
    /// Training: (batch, batches) of the epoch in progress.
    pub batch: (usize, usize),
    /// Inference: (images done, images).
    pub images: (usize, usize),
    pub epochs: Vec<EpochReport>,
    pub log: VecDeque<String>,
    /// The final event has been seen (the worker's exit then needs no recording).
    pub ended: bool,
    /// The job's row in the store's `jobs` table, once recorded.
    pub store_job: Option<i64>,
    pub test_balanced_accuracy: Option<f64>,
}

impl Job {
    fn new(id: u64, title: String, training: bool) -> Self {
        Self {
            id,
            run_id: String::new(),
            title,
            training,
            status: JobStatus::Starting,
            started: Instant::now(),
            finished: None,
            device: None,
            epoch: (0, 0),
            batch: (0, 0),
            images: (0, 0),
            epochs: Vec::new(),
            log: VecDeque::new(),
            ended: false,
            store_job: None,
            test_balanced_accuracy: None,
        }
    }

    pub fn log(&mut self, line: impl Into<String>) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line.into());
    }

    /// Done fraction in [0, 1].
    pub fn progress(&self) -> f64 {
        if self.status == JobStatus::Completed {
            return 1.0;
        }
        let ratio = |done: usize, total: usize| {
            if total == 0 {
                0.0
            } else {
                (done as f64 / total as f64).clamp(0.0, 1.0)
            }
        };
        if self.training {
            let (epoch, total) = self.epoch;
            let within = ratio(self.batch.0, self.batch.1);
            ratio(1, total) * (epoch.saturating_sub(1) as f64 + within)
        } else {
            ratio(self.images.0, self.images.1)
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.finished.unwrap_or_else(Instant::now) - self.started
    }

    /// Time left at the pace so far, once there is a pace.
    pub fn remaining(&self) -> Option<Duration> {
        let done = self.progress();
        (self.status == JobStatus::Running && done > 0.01)
            .then(|| self.elapsed().mul_f64((1.0 - done) / done))
    }
}

/// A form field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Kind,
    Task,
    Method,
    Preset,
    Epochs,
    Run,
    Sequence,
    Unrated,
}

/// The new-job form: every value is picked with Left / Right.
#[derive(Debug, Clone, PartialEq)]
pub struct JobForm {
    pub training: bool,
    pub field: usize,
    pub task: usize,
    pub method: usize,
    pub preset: usize,
    pub epochs: usize,
    /// Index into the completed training runs, for inference.
    pub run: usize,
    pub sequence: usize,
    pub unrated: bool,
    pub error: Option<String>,
}

impl Default for JobForm {
    fn default() -> Self {
        Self {
            training: true,
            field: 0,
            task: 0,
            method: 0,
            preset: 0,
            epochs: 5,
            run: 0,
            sequence: 0,
            unrated: false,
            error: None,
        }
    }
}

impl JobForm {
    pub fn fields(&self) -> &'static [Field] {
        if self.training {
            &[
                Field::Kind,
                Field::Task,
                Field::Method,
                Field::Preset,
                Field::Epochs,
            ]
        } else {
            &[Field::Kind, Field::Run, Field::Sequence, Field::Unrated]
        }
    }

    pub fn current(&self) -> Field {
        let fields = self.fields();
        fields[self.field.min(fields.len() - 1)]
    }

    pub fn move_field(&mut self, delta: isize) {
        let n = self.fields().len() as isize;
        self.field = (self.field as isize + delta).rem_euclid(n) as usize;
    }

    /// Changes the current field's value by one step.
    pub fn change(&mut self, delta: isize, runs: usize, sequences: usize) {
        let step = |value: usize, n: usize| -> usize {
            if n == 0 {
                0
            } else {
                (value as isize + delta).rem_euclid(n as isize) as usize
            }
        };
        match self.current() {
            Field::Kind => {
                self.training = !self.training;
                self.field = 0;
            }
            Field::Task => self.task = step(self.task, TASKS.len()),
            Field::Method => self.method = step(self.method, Method::ALL.len()),
            Field::Preset => self.preset = step(self.preset, PRESETS.len()),
            Field::Epochs => {
                self.epochs = (self.epochs as isize + delta).clamp(1, 500) as usize;
            }
            Field::Run => self.run = step(self.run, runs),
            Field::Sequence => self.sequence = step(self.sequence, sequences),
            Field::Unrated => self.unrated = !self.unrated,
        }
        self.error = None;
    }
}

/// What the Jobs view asks of the app: a status line, effects to carry out (start,
/// stop, record), and whether the store's runs changed under the other views.
#[derive(Debug, Default)]
pub struct JobsOutcome {
    pub message: Option<String>,
    pub effects: Vec<Effect>,
    pub runs_changed: bool,
}

impl JobsOutcome {
    fn say(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
            ..Self::default()
        }
    }
}

/// The view's state.
#[derive(Debug, Default)]
pub struct JobsState {
    pub jobs: Vec<Job>,
    /// Index into the jobs of this session followed by the stored runs.
    pub selected: usize,
    pub form: Option<JobForm>,
    /// Every run in the store, newest first; `None` until loaded.
    pub runs: Option<Result<Vec<RunSummary>, String>>,
    /// Epochs of the selected stored run: (run id, epochs).
    pub run_epochs: Option<(String, Result<Vec<EpochRow>, String>)>,
    /// The user asked to quit at this time: waiting for the jobs to stop.
    pub quitting: Option<Instant>,
    /// The next `q` cancels the running jobs and quits.
    pub confirm_quit: bool,
    next_id: u64,
}

/// What the list's selected line is.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    Job(&'a Job),
    Run(&'a RunSummary),
}

impl JobsState {
    pub fn active(&self) -> usize {
        self.jobs.iter().filter(|j| j.status.is_active()).count()
    }

    /// Stored runs that are not jobs of this session.
    pub fn other_runs(&self) -> Vec<&RunSummary> {
        match &self.runs {
            Some(Ok(runs)) => runs
                .iter()
                .filter(|r| !self.jobs.iter().any(|j| j.run_id == r.run_id))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.jobs.len() + self.other_runs().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn selection(&self) -> Option<Selection<'_>> {
        // Newest job first.
        let n = self.jobs.len();
        if self.selected < n {
            return self.jobs.get(n - 1 - self.selected).map(Selection::Job);
        }
        self.other_runs()
            .get(self.selected - n)
            .copied()
            .map(Selection::Run)
    }

    pub fn move_selection(&mut self, delta: i64) {
        let len = self.len() as i64;
        if len > 0 {
            self.selected = (self.selected as i64 + delta).clamp(0, len - 1) as usize;
        }
    }

    /// Completed training runs, newest first: what inference can use.
    pub fn trained_runs(&self) -> Vec<String> {
        match &self.runs {
            Some(Ok(runs)) => runs
                .iter()
                .filter(|r| r.kind == "train" && r.status == "completed")
                .map(|r| r.run_id.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The request the form describes, or what is missing.
    pub fn request(&self, form: &JobForm, sequences: &[String]) -> Result<JobRequest, String> {
        if form.training {
            let task = TASKS[form.task % TASKS.len()];
            let method = Method::ALL[form.method % Method::ALL.len()];
            let preset = PRESETS[form.preset % PRESETS.len()];
            let base = format!("{}-{}-{preset}", task.name(), method.name());
            // A fresh name: the first free numbered one.
            let taken = |name: &str| {
                self.jobs.iter().any(|j| j.run_id == name)
                    || matches!(&self.runs, Some(Ok(runs)) if runs.iter().any(|r| r.run_id == name))
            };
            let run = (1..)
                .map(|n| format!("{base}-{n}"))
                .find(|name| !taken(name))
                .unwrap_or(base);
            Ok(JobRequest::Train(TrainRequest {
                preset: Some(preset.into()),
                task,
                method: method.name().into(),
                epochs: Some(form.epochs),
                run: Some(run),
                ..TrainRequest::default()
            }))
        } else {
            let runs = self.trained_runs();
            let Some(run) = runs.get(form.run % runs.len().max(1)) else {
                return Err("no completed training run yet: train one first".into());
            };
            let Some(sequence) = sequences.get(form.sequence % sequences.len().max(1)) else {
                return Err("no images in the store".into());
            };
            Ok(JobRequest::Infer(InferRequest {
                run: Some(run.clone()),
                torchscript: None,
                preset: None,
                task: Task::Usable,
                sequence: sequence.clone(),
                unrated: form.unrated,
                device: "auto".into(),
            }))
        }
    }

    /// Adds a job for a request about to be planned; returns its id.
    pub fn add(&mut self, request: &JobRequest) -> u64 {
        self.next_id += 1;
        let (title, training) = match request {
            JobRequest::Train(t) => (
                format!(
                    "train {} {} ({}, {} epochs)",
                    t.task.name(),
                    t.method,
                    t.preset
                        .as_deref()
                        .unwrap_or(crate::jobs::plan::DEFAULT_PRESET),
                    t.epochs.unwrap_or_default()
                ),
                true,
            ),
            JobRequest::Infer(i) => (
                format!(
                    "predict {}{} with {}",
                    i.sequence,
                    if i.unrated { " (unrated)" } else { "" },
                    i.run.as_deref().unwrap_or("a model")
                ),
                false,
            ),
        };
        let mut job = Job::new(self.next_id, title, training);
        if let JobRequest::Train(t) = request {
            job.run_id = t.run.clone().unwrap_or_default();
            job.epoch = (0, t.epochs.unwrap_or_default());
        }
        if let JobRequest::Infer(i) = request {
            job.run_id = i.run.clone().unwrap_or_default();
        }
        self.jobs.push(job);
        self.selected = 0;
        self.next_id
    }

    pub fn job_mut(&mut self, id: u64) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    /// Applies a worker event; returns the event's outcome for recording when final.
    pub fn on_event(&mut self, id: u64, event: &JobEvent) {
        let Some(job) = self.job_mut(id) else {
            return;
        };
        if job.status == JobStatus::Starting {
            job.status = JobStatus::Running;
        }
        match event {
            JobEvent::Started {
                first_epoch,
                total_epochs,
                device,
            } => {
                job.device = Some(device.clone());
                job.epoch = (first_epoch + 1, *total_epochs);
                job.log(format!(
                    "started on {device}: epochs {} to {total_epochs}",
                    first_epoch + 1
                ));
            }
            JobEvent::Batch {
                epoch,
                batch,
                batches,
            } => {
                job.epoch.0 = *epoch;
                job.batch = (*batch, *batches);
            }
            JobEvent::Epoch { report } => {
                job.log(format!(
                    "epoch {:>3}: loss {:.4}, validation loss {:.4}, BA {:.3} ({:.1} s){}",
                    report.epoch,
                    report.train_loss,
                    report.val_loss,
                    report.val_balanced_accuracy,
                    report.seconds,
                    if report.improved { " *" } else { "" }
                ));
                job.epochs.retain(|e| e.epoch != report.epoch);
                job.epochs.push(report.clone());
            }
            JobEvent::ItemFailed { id, error } => job.log(format!("image {id}: {error}")),
            JobEvent::ItemNotRegistered { id, reason } => {
                job.log(format!("image {id}: stored as reject: {reason}"))
            }
            JobEvent::Progress { done, total } => job.images = (*done, *total),
            JobEvent::Trained { result } => finish_training(job, result),
            JobEvent::Predicted { result } => finish_inference(job, result),
            JobEvent::Failed { error } => {
                job.log(format!("failed: {error}"));
                job.status = JobStatus::Failed(error.clone());
                job.ended = true;
                job.finished = Some(Instant::now());
            }
        }
    }
}

fn finish_training(job: &mut Job, result: &TrainResult) {
    let o = &result.outcome;
    job.ended = true;
    job.finished = Some(Instant::now());
    if o.status == TrainStatus::Cancelled {
        job.status = JobStatus::Interrupted;
        job.log(format!(
            "interrupted after {} epochs: a checkpoint is saved (cdwqc train --resume {})",
            o.epochs_completed, job.run_id
        ));
        return;
    }
    job.status = JobStatus::Completed;
    job.test_balanced_accuracy = result.test_balanced_accuracy;
    job.log(format!(
        "{} after {} epochs; best epoch {}; test BA {} on {} images",
        o.status,
        o.epochs_completed,
        o.best_epoch.map_or("none".into(), |e| e.to_string()),
        result
            .test_balanced_accuracy
            .map_or("undefined".into(), |b| format!("{b:.3}")),
        result.test_images
    ));
}

fn finish_inference(job: &mut Job, result: &InferResult) {
    job.ended = true;
    job.finished = Some(Instant::now());
    job.status = if result.cancelled {
        JobStatus::Interrupted
    } else {
        JobStatus::Completed
    };
    job.log(format!(
        "{} images predicted ({} failed{}) in {:.1} s{}",
        result.rows.len(),
        result.failed,
        match result.not_registered {
            0 => String::new(),
            n => format!(", {n} stored as reject: not registered"),
        },
        result.seconds,
        if result.cancelled {
            "; stopped before the others".to_string()
        } else if let Some(threads) = result.warm_threads {
            let s = if threads == 1 { "" } else { "s" };
            format!("; every tensor was cached, so the network ran on {threads} thread{s}")
        } else {
            String::new()
        }
    ));
}

/// What the view's keys and the job workers' reports do.
impl JobsState {
    /// Keys of the open form: arrows move and change, Enter starts, Esc closes.
    pub fn on_form_key(&mut self, key: &KeyEvent, sequences: &[String]) -> JobsOutcome {
        let runs = self.trained_runs().len();
        let Some(form) = self.form.as_mut() else {
            return JobsOutcome::default();
        };
        match key.code {
            KeyCode::Esc => self.form = None,
            KeyCode::Up | KeyCode::BackTab => form.move_field(-1),
            KeyCode::Down | KeyCode::Tab => form.move_field(1),
            KeyCode::Left | KeyCode::Char('h') | KeyCode::Char('-') => {
                form.change(-1, runs, sequences.len())
            }
            KeyCode::Right | KeyCode::Char('l') | KeyCode::Char('+') | KeyCode::Char(' ') => {
                form.change(1, runs, sequences.len())
            }
            // Ten steps at a time: epochs run to 500, too far for single steps.
            KeyCode::PageUp => form.change(10, runs, sequences.len()),
            KeyCode::PageDown => form.change(-10, runs, sequences.len()),
            KeyCode::Enter => {
                let form = form.clone();
                match self.request(&form, sequences) {
                    Ok(request) => {
                        self.form = None;
                        let id = self.add(&request);
                        return JobsOutcome {
                            effects: vec![Effect::StartJob { id, request }],
                            ..JobsOutcome::say("planning the job…")
                        };
                    }
                    Err(e) => {
                        if let Some(f) = self.form.as_mut() {
                            f.error = Some(e);
                        }
                    }
                }
            }
            _ => {}
        }
        JobsOutcome::default()
    }

    /// Asks a running job to stop; `None` when it is not running or already stopping.
    pub fn cancel(&mut self, id: u64) -> Option<Effect> {
        let job = self.job_mut(id)?;
        if !job.status.is_active() || job.status == JobStatus::Stopping {
            return None;
        }
        job.status = JobStatus::Stopping;
        job.log(if job.training {
            "stopping: saving a checkpoint after this batch"
        } else {
            "stopping after this batch of images"
        });
        Some(Effect::Fetch(Request::CancelJob { id }))
    }

    /// Stops every running job, for quitting once they have ended.
    pub fn stop_all(&mut self) -> JobsOutcome {
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|j| j.status.is_active())
            .map(|j| j.id)
            .collect();
        let effects = ids.into_iter().filter_map(|id| self.cancel(id)).collect();
        self.quitting.get_or_insert_with(Instant::now);
        JobsOutcome {
            effects,
            ..JobsOutcome::say(format!(
                "stopping {} job(s) before quitting (training saves a checkpoint)…",
                self.active()
            ))
        }
    }

    /// The job's run is planned (its row is in the store), or it could not be.
    pub fn on_planned(
        &mut self,
        id: u64,
        result: Result<(String, String, i64), String>,
    ) -> JobsOutcome {
        let Some(job) = self.job_mut(id) else {
            return JobsOutcome::default();
        };
        let message = match result {
            Ok((run_id, summary, store_job)) => {
                job.run_id = run_id;
                job.store_job = Some(store_job);
                job.log(summary);
                format!("started {}", job.title)
            }
            Err(e) => {
                job.log(format!("not started: {e}"));
                job.status = JobStatus::Failed(e.clone());
                job.ended = true;
                job.finished = Some(Instant::now());
                format!("the job did not start: {e}")
            }
        };
        // The new run is in the store now.
        self.runs = None;
        JobsOutcome {
            runs_changed: true,
            ..JobsOutcome::say(message)
        }
    }

    /// A line from the job's worker: a log line, or an event to record in the store.
    pub fn on_output(&mut self, id: u64, line: JobLine) -> JobsOutcome {
        let event = match line {
            JobLine::Log(text) => {
                if let Some(job) = self.job_mut(id) {
                    job.log(text);
                }
                return JobsOutcome::default();
            }
            JobLine::Event(event) => event,
        };
        let Some(job) = self.job_mut(id) else {
            return JobsOutcome::default();
        };
        let (run_id, training) = (job.run_id.clone(), job.training);
        let mut outcome = JobsOutcome::default();
        match &*event {
            JobEvent::Epoch { report } => outcome.effects.push(Effect::RecordEpoch {
                run_id,
                report: report.clone(),
            }),
            JobEvent::Trained { result } => outcome.effects.push(Effect::RecordTraining {
                run_id,
                result: Box::new(Ok((**result).clone())),
            }),
            JobEvent::Predicted { result } => outcome.effects.push(Effect::RecordInference {
                run_id,
                result: result.clone(),
            }),
            JobEvent::Failed { error } if training => {
                outcome.effects.push(Effect::RecordTraining {
                    run_id,
                    result: Box::new(Err(error.clone())),
                });
            }
            _ => {}
        }
        self.on_event(id, &event);
        if event.is_final()
            && let Some(job) = self.job_mut(id)
        {
            outcome.message = Some(format!("{}: {}", job.title, job.status.label()));
            outcome.effects.extend(finish_job(job));
        }
        outcome
    }

    /// The job's worker process ended.
    pub fn on_exited(&mut self, id: u64, code: Option<i32>) -> JobsOutcome {
        let Some(job) = self.job_mut(id) else {
            return JobsOutcome::default();
        };
        if job.ended {
            return JobsOutcome::default();
        }
        // The worker ended without saying how: a crash, or a kill from outside. A stop
        // asked for while the worker was still starting reaches it before its interrupt
        // handler exists, and ends it at once: nothing had been trained or predicted.
        let error = match code {
            Some(code) => format!("the worker exited with status {code} without finishing"),
            None if job.status == JobStatus::Stopping => {
                "stopped while the worker was starting (nothing to keep)".to_string()
            }
            None => "the worker was killed".to_string(),
        };
        job.log(error.clone());
        job.status = JobStatus::Failed(error.clone());
        job.ended = true;
        job.finished = Some(Instant::now());
        let mut outcome = JobsOutcome::say(format!("{}: {error}", job.title));
        outcome.effects.extend(finish_job(job));
        if job.training && !job.run_id.is_empty() {
            outcome.effects.push(Effect::RecordTraining {
                run_id: job.run_id.clone(),
                result: Box::new(Err(error)),
            });
        }
        outcome
    }
}

/// The effect that records an ended job in its `jobs` row, if it has one.
fn finish_job(job: &Job) -> Option<Effect> {
    let (status, error) = match &job.status {
        JobStatus::Completed => ("completed", None),
        JobStatus::Failed(e) => ("failed", Some(e.clone())),
        _ => ("cancelled", None),
    };
    Some(Effect::FinishJob {
        job: job.store_job?,
        status,
        progress: job.progress(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::train::Phase;

    fn report(epoch: usize) -> EpochReport {
        EpochReport {
            epoch,
            phase: Phase::Main,
            train_loss: 1.0 / epoch as f64,
            source_loss: f64::NAN,
            target_loss: 0.5,
            domain_loss: 0.7,
            val_loss: 0.6,
            val_balanced_accuracy: 0.5,
            alpha: 0.1,
            seconds: 2.0,
            improved: epoch == 1,
        }
    }

    /// A training job as the form starts it, planned under `run`.
    fn planned_training(state: &mut JobsState, run: &str) -> u64 {
        let form = JobForm {
            field: 2,
            ..JobForm::default()
        };
        let request = state.request(&form, &[]).expect("a training request");
        let id = state.add(&request);
        let planned = state.on_planned(id, Ok((run.into(), "planned".into(), 41)));
        assert!(planned.runs_changed && planned.effects.is_empty());
        id
    }

    #[test]
    fn a_stop_is_asked_once_and_a_killed_worker_is_recorded_as_failed() {
        let mut state = JobsState::default();
        let id = planned_training(&mut state, "r1");
        assert!(matches!(
            state.cancel(id),
            Some(Effect::Fetch(Request::CancelJob { id: asked })) if asked == id
        ));
        assert!(state.cancel(id).is_none(), "already stopping");
        let quit = state.stop_all();
        assert!(quit.effects.is_empty(), "{quit:?}");
        assert!(state.quitting.is_some());
        let ended = state.on_exited(id, None);
        assert_eq!(
            ended.message.as_deref(),
            Some(
                "train usable ssda (demo, 5 epochs): stopped while the worker was starting \
                 (nothing to keep)"
            )
        );
        // The jobs row ends, and the run is marked failed with the same reason.
        assert!(matches!(
            &ended.effects[..],
            [
                Effect::FinishJob { job: 41, status: "failed", .. },
                Effect::RecordTraining { run_id, result }
            ] if run_id == "r1" && result.is_err()
        ));
        assert_eq!(state.active(), 0);
        let again = state.on_exited(id, Some(1));
        assert!(
            again.effects.is_empty() && again.message.is_none(),
            "ended once"
        );
    }

    #[test]
    fn the_form_builds_a_fresh_run_name_and_cycles_its_values() {
        let mut state = JobsState::default();
        let mut form = JobForm {
            field: 2,
            ..JobForm::default()
        };
        form.change(1, 0, 0);
        assert_eq!(form.current(), Field::Method);
        let JobRequest::Train(t) = state.request(&form, &[]).unwrap() else {
            panic!("a training request");
        };
        assert_eq!(t.method, "target-only");
        assert_eq!(t.run.as_deref(), Some("usable-target-only-demo-1"));
        state.add(&JobRequest::Train(t));
        let JobRequest::Train(t) = state.request(&form, &[]).unwrap() else {
            panic!("a training request");
        };
        assert_eq!(t.run.as_deref(), Some("usable-target-only-demo-2"));
        // Switching to inference without a trained run says what is missing.
        form.field = 0;
        form.change(1, 0, 0);
        assert!(!form.training);
        let err = state.request(&form, &["FLAIR".into()]).unwrap_err();
        assert!(err.contains("train one first"), "{err}");
        form.field = 4;
        form.move_field(1);
        assert_eq!(form.field, 1, "fields wrap around");
    }

    #[test]
    fn events_drive_progress_curves_and_the_final_status() {
        let mut state = JobsState::default();
        let id = state.add(&JobRequest::Train(TrainRequest {
            epochs: Some(4),
            run: Some("r".into()),
            ..TrainRequest::default()
        }));
        state.on_event(
            id,
            &JobEvent::Started {
                first_epoch: 0,
                total_epochs: 4,
                device: "cpu".into(),
            },
        );
        state.on_event(
            id,
            &JobEvent::Batch {
                epoch: 2,
                batch: 5,
                batches: 10,
            },
        );
        let job = &state.jobs[0];
        assert_eq!(job.status, JobStatus::Running);
        assert!((job.progress() - 1.5 / 4.0).abs() < 1e-12);
        state.on_event(id, &JobEvent::Epoch { report: report(1) });
        state.on_event(id, &JobEvent::Epoch { report: report(1) });
        assert_eq!(state.jobs[0].epochs.len(), 1, "a repeated epoch replaces");
        state.on_event(
            id,
            &JobEvent::Failed {
                error: "disk full".into(),
            },
        );
        let job = &state.jobs[0];
        assert!(job.ended && !job.status.is_active());
        assert!(job.log.back().unwrap().contains("disk full"));
        assert_eq!(state.active(), 0);
    }

    #[test]
    fn the_log_keeps_the_latest_lines() {
        let mut job = Job::new(1, "t".into(), true);
        for i in 0..(LOG_LINES + 5) {
            job.log(i.to_string());
        }
        assert_eq!(job.log.len(), LOG_LINES);
        assert_eq!(job.log.front().map(String::as_str), Some("5"));
    }
}
