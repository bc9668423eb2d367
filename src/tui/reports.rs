//! The Reports view's data: the agreement report and the comparison of every run with
//! predictions, built on the reader thread exactly as `cdwqc report` builds them, and
//! their export as the same self-contained HTML files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::report::ReportError;
use crate::report::agreement::{self, AgreementOptions, AgreementReport, Task};
use crate::report::model::{self, Comparison, ModelOptions};
use crate::store::Store;

/// Both reports, as the view shows them.
#[derive(Debug, Clone)]
pub struct ReportsData {
    pub agreement: AgreementReport,
    /// `None` when the store has no run with predictions yet.
    pub comparison: Option<Comparison>,
}

/// The view's own state.
#[derive(Debug, Default)]
pub struct ReportsState {
    pub data: Option<Result<Arc<ReportsData>, String>>,
    /// Index into [`Task::ALL`].
    pub task: usize,
    pub exporting: bool,
}

impl ReportsState {
    pub fn task(&self) -> Task {
        Task::ALL[self.task % Task::ALL.len()]
    }

    pub fn next_task(&mut self) {
        self.task = (self.task + 1) % Task::ALL.len();
    }
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
        std::fs::write(&path, html).map_err(|e| format!("writing {}: {e}", path.display()))?;
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
