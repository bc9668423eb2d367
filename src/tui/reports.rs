//! The Reports view's data: the agreement report and the comparison of every run with
//! predictions, built on the reader thread exactly as `cdwqc report` builds them, and
//! their export as the same self-contained HTML files; and the selected run's
//! calibration, operating point and triage band, built off the reader thread by
//! `cdwqc report model --target-sensitivity T --triage T`'s own function.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::metrics::OperatingTarget;
use crate::rate::triage::{self, TriagePick};
use crate::report::ReportError;
use crate::report::agreement::{self, AgreementOptions, AgreementReport, Task};
use crate::report::model::{
    self, CalibrationReport, Comparison, ModelOptions, OperatingPoint, TriageReport,
};
use crate::store::Store;
use crate::store::queues::ItemReason;
use crate::store::raters::Role;

/// Both reports, as the view shows them.
#[derive(Debug, Clone)]
pub struct ReportsData {
    pub agreement: AgreementReport,
    /// `None` when the store has no run with predictions yet.
    pub comparison: Option<Comparison>,
}

/// The sensitivities the view offers as operating target (and triage rate).
pub const TARGETS: [f64; 3] = [0.90, 0.95, 0.99];
/// [`TARGETS`]' default, as `cdwqc infer --threshold auto`'s.
const DEFAULT_TARGET: usize = 1;

/// A run's calibration, its threshold at the target sensitivity and its triage band
/// at the same rate, as `cdwqc report model` computes them.
#[derive(Debug, Clone)]
pub struct OperatingView {
    pub run_id: String,
    pub categories: Vec<String>,
    /// Where the sensitivity, specificity and triage counts are measured.
    pub set: model::EvalSet,
    pub calibration: CalibrationReport,
    pub operating_point: Option<OperatingPoint>,
    pub triage: Option<TriageReport>,
}

/// Operating views by (run, index into [`TARGETS`]).
pub type OperatingCache = HashMap<(String, usize), Result<Arc<OperatingView>, String>>;

/// The view's own state.
#[derive(Debug)]
pub struct ReportsState {
    pub data: Option<Result<Arc<ReportsData>, String>>,
    /// Index into [`Task::ALL`].
    pub task: usize,
    pub exporting: bool,
    /// The selected row among the task's runs.
    pub selected: usize,
    /// Index into [`TARGETS`].
    pub target: usize,
    pub operating: OperatingCache,
    /// The triage queue of (run, target) the next queue key stores, once picked.
    pub queue_plan: Option<PickedTriage>,
}

/// A triage queue picked for (run id, index into [`TARGETS`]), or why it could not be.
pub type PickedTriage = ((String, usize), Result<Arc<TriagePlan>, String>);

impl Default for ReportsState {
    fn default() -> Self {
        Self {
            data: None,
            task: 0,
            exporting: false,
            selected: 0,
            target: DEFAULT_TARGET,
            operating: HashMap::new(),
            queue_plan: None,
        }
    }
}

impl ReportsState {
    pub fn task(&self) -> Task {
        Task::ALL[self.task % Task::ALL.len()]
    }

    pub fn next_task(&mut self) {
        self.task = (self.task + 1) % Task::ALL.len();
        self.selected = 0;
    }

    pub fn target(&self) -> f64 {
        TARGETS[self.target % TARGETS.len()]
    }

    pub fn next_target(&mut self) {
        self.target = (self.target + 1) % TARGETS.len();
    }

    /// The runs of the current task, as the models table lists them.
    pub fn task_runs(&self) -> Vec<String> {
        let task = self.task();
        match &self.data {
            Some(Ok(data)) => data.comparison.as_ref().map_or_else(Vec::new, |c| {
                c.runs
                    .iter()
                    .filter(|r| r.task == task)
                    .map(|r| r.run_id.clone())
                    .collect()
            }),
            _ => Vec::new(),
        }
    }

    pub fn selected_run(&self) -> Option<String> {
        let runs = self.task_runs();
        runs.get(self.selected.min(runs.len().saturating_sub(1)))
            .cloned()
    }

    pub fn move_selection(&mut self, delta: i64) {
        let n = self.task_runs().len() as i64;
        if n == 0 {
            return;
        }
        self.selected = (self.selected as i64).saturating_add(delta).clamp(0, n - 1) as usize;
    }

    /// The selected run's operating view at the current target, once computed.
    pub fn operating_view(&self) -> Option<&Result<Arc<OperatingView>, String>> {
        self.operating.get(&(self.selected_run()?, self.target))
    }
}

/// The overlap and seed of a triage queue made from the view: `queue create`'s defaults.
const QUEUE_OVERLAP: f64 = 0.2;
const QUEUE_SEED: u64 = 1;

/// A triage queue ready to store: the unrated images in the band, for every rater.
#[derive(Debug, Clone, PartialEq)]
pub struct TriagePlan {
    pub name: String,
    pub pick: TriagePick,
    pub raters: Vec<String>,
}

impl TriagePlan {
    /// What the view says before the queue is stored.
    pub fn describe(&self) -> String {
        format!(
            "{} · queue {} for {}",
            self.pick.summary(),
            self.name,
            self.raters.join(", ")
        )
    }
}

/// Picks a run's triage band at `TARGETS[target]` for a queue (a reader's thread calls
/// this), as `cdwqc queue create --strategy triage --triage T` for every rater.
pub fn triage_plan(store: &Store, run_id: &str, target: usize) -> Result<TriagePlan, String> {
    let rate = TARGETS[target % TARGETS.len()];
    let raters: Vec<String> = store
        .raters()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|r| r.role == Role::Rater.as_str())
        .map(|r| r.name)
        .collect();
    if raters.is_empty() {
        return Err("no rater to queue for: add them with `cdwqc raters add NAME`".into());
    }
    let pick = triage::pick(store, run_id, None, rate).map_err(|e| e.to_string())?;
    if pick.review.is_empty() {
        return Err(format!("{}: no image to queue", pick.summary()));
    }
    Ok(TriagePlan {
        name: format!("triage-{run_id}-{rate}"),
        pick,
        raters,
    })
}

/// Stores a planned triage queue (the writer calls this); says what it stored.
pub fn store_triage_queue(writer: &mut Store, plan: &TriagePlan) -> Result<String, String> {
    let images: Vec<(i64, Option<ItemReason>)> = plan
        .pick
        .review
        .iter()
        .map(|(id, why)| (*id, Some(why.clone())))
        .collect();
    let dealt = triage::deal(&images, &plan.raters, QUEUE_OVERLAP, QUEUE_SEED)
        .map_err(|e| e.to_string())?;
    writer
        .create_queue(
            &plan.name,
            None,
            QUEUE_OVERLAP,
            QUEUE_SEED,
            &plan.pick.origin(),
            &dealt.reasons,
            &dealt.rows,
            &[],
        )
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "queue {}: {} images, {} shared by all {} raters",
        plan.name,
        images.len(),
        dealt.shared,
        plan.raters.len()
    ))
}

/// Builds a run's operating view at `TARGETS[target]` (a reader's thread calls this).
pub fn operating_view(store: &Store, run_id: &str, target: usize) -> Result<OperatingView, String> {
    let rate = TARGETS[target % TARGETS.len()];
    let report = model::build(
        store,
        run_id,
        &ModelOptions {
            target: Some(OperatingTarget::Sensitivity(rate)),
            triage: Some(rate),
            ..ModelOptions::thresholds_only()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(OperatingView {
        run_id: run_id.to_string(),
        categories: report.categories,
        set: report.set,
        calibration: report.calibration,
        operating_point: report.operating_point,
        triage: report.triage,
    })
}

fn model_options(figures: bool) -> ModelOptions {
    ModelOptions {
        figures,
        ..ModelOptions::default()
    }
}

fn comparison(store: &Store, figures: bool) -> Result<Option<Comparison>, ReportError> {
    let runs = match model::resolve_runs(store, &["*".to_string()]) {
        Ok(runs) => runs,
        // No run at all: an empty state, not an error.
        Err(ReportError::Input(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let c = model::compare(store, &runs, &model_options(figures))?;
    Ok((!c.runs.is_empty()).then_some(c))
}

/// Builds both reports (the reader thread calls this).
pub fn load(store: &Store) -> Result<ReportsData, String> {
    let agreement =
        agreement::build(store, &AgreementOptions::default()).map_err(|e| e.to_string())?;
    let comparison = comparison(store, false).map_err(|e| e.to_string())?;
    Ok(ReportsData {
        agreement,
        comparison,
    })
}

/// Where exported reports go: a `reports` folder beside the store.
pub fn export_dir(store: &Store) -> PathBuf {
    store
        .path()
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("reports")
}

/// Writes the agreement and comparison reports as HTML; returns the files written.
pub fn export(store: &Store) -> Result<Vec<PathBuf>, String> {
    let dir = export_dir(store);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut write = |name: &str, html: String| -> Result<(), String> {
        let path = dir.join(name);
        // Never the store, its WAL or another DuckDB file, through links either.
        crate::query::write_file(&path, store.path(), html.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let agreement =
        agreement::build(store, &AgreementOptions::default()).map_err(|e| e.to_string())?;
    write("agreement.html", agreement::document(&agreement).html())?;
    if let Some(c) = comparison(store, true).map_err(|e| e.to_string())? {
        write("comparison.html", model::compare_document(&c).html())?;
    }
    Ok(written)
}
