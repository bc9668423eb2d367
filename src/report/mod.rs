//! Reports: agreement between raters and model performance, assembled from the store
//! and rendered as Markdown, JSON and a self-contained HTML file with SVG plots.

pub mod agreement;
pub mod document;
pub mod model;
pub mod plots;

use serde::Serialize;

use crate::metrics::{Estimate, MetricError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Input(String),
    #[error("run {run} has no {task} predictions: run `cdwqc infer --run {run}`")]
    NoPredictions { run: String, task: String },
}

/// One reported number: a value (with its 95% CI and standard error when the statistic
/// has them), or the reason it is undefined. Never a made-up number.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Value {
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci95: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub se: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undefined: Option<String>,
    /// Images the interval was computed from, for coefficients whose interval depends
    /// on it most (kappa, AC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// Why the interval should not be read as a precise one (too few images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Below this many images an agreement coefficient's 95% interval spans most of its
/// range: the report says so beside it.
pub const FEW_IMAGES_FOR_AN_INTERVAL: u64 = 10;

impl Value {
    pub fn of(v: f64) -> Self {
        if v.is_finite() {
            Self {
                value: Some(v),
                ..Self::default()
            }
        } else {
            Self::undefined_text("not a finite number".into())
        }
    }

    pub fn with_ci(v: f64, ci: (f64, f64), se: Option<f64>) -> Self {
        let mut out = Self::of(v);
        if out.value.is_some() {
            out.ci95 = (ci.0.is_finite() && ci.1.is_finite()).then_some([ci.0, ci.1]);
            out.se = se.filter(|s| s.is_finite());
        }
        out
    }

    /// A chance-corrected agreement coefficient (kappa, AC1) with its interval clipped
    /// to the coefficient's range [-1, 1] (a linearised or normal interval is not
    /// bounded by itself), the number of images beside it, and a note when they are too
    /// few for the interval to mean much.
    pub fn coefficient(v: f64, ci: Option<(f64, f64)>, se: Option<f64>, n: u64) -> Self {
        let mut out = Self::with_ci(v, ci.unwrap_or((f64::NAN, f64::NAN)), se);
        out.ci95 = out
            .ci95
            .map(|[lo, hi]| [lo.clamp(-1.0, 1.0), hi.clamp(-1.0, 1.0)]);
        out.n = Some(n);
        if out.value.is_some() && n < FEW_IMAGES_FOR_AN_INTERVAL {
            out.note = Some(format!(
                "only {n} image{}: too few for the interval to mean much",
                if n == 1 { "" } else { "s" }
            ));
        }
        out
    }

    pub fn undefined(e: &MetricError) -> Self {
        let reason = match e.undefined_reason() {
            Some(r) => r.to_string(),
            None => e.to_string(),
        };
        Self::undefined_text(reason)
    }

    pub fn undefined_text(reason: String) -> Self {
        Self {
            undefined: Some(reason),
            ..Self::default()
        }
    }

    pub fn from_estimate(e: Estimate) -> Self {
        match e {
            Ok(v) => Self::of(v),
            Err(e) => Self::undefined(&e),
        }
    }

    /// `0.812 [0.714, 0.910]` or `undefined (reason)`, without n or note: for the
    /// dashboard's narrow columns, beside a column that gives n.
    pub fn brief(&self) -> String {
        match (self.value, self.ci95) {
            (Some(v), Some([lo, hi])) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
            (Some(v), None) => format!("{v:.3}"),
            (None, _) => format!(
                "undefined ({})",
                self.undefined.as_deref().unwrap_or("no value")
            ),
        }
    }

    /// A difference: `+0.070 [0.036, 0.106]`, the point's sign always written (a gain
    /// and a loss must not look alike), else as [`Value::brief`].
    pub fn signed(&self) -> String {
        match (self.value, self.ci95) {
            (Some(v), Some([lo, hi])) => format!("{v:+.3} [{lo:.3}, {hi:.3}]"),
            (Some(v), None) => format!("{v:+.3}"),
            (None, _) => self.brief(),
        }
    }

    /// `0.812 [0.714, 0.910]`, `0.812 [0.714, 0.910], n = 34`, with the note when there
    /// is one, or `undefined (reason)`.
    pub fn text(&self) -> String {
        let value = self.brief();
        if self.value.is_none() {
            return value;
        }
        match (self.n, &self.note) {
            (Some(n), Some(note)) => format!("{value}, n = {n} ({note})"),
            (Some(n), None) => format!("{value}, n = {n}"),
            (None, _) => value,
        }
    }
}

/// A titled SVG plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    /// The `<svg>` element, or the reason the plot could not be drawn.
    pub svg: Result<String, String>,
}

impl Figure {
    fn new(title: String, svg: Result<String, plots::PlotError>) -> Self {
        Self {
            title,
            svg: svg.map_err(|e| e.to_string()),
        }
    }

    pub fn confusion(
        title: String,
        labels: &[&str],
        counts: &[Vec<u64>],
        rows: &str,
        cols: &str,
    ) -> Self {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let svg = plots::confusion_matrix(&title, &labels, counts, rows, cols);
        Self::new(title, svg)
    }

    pub fn kappa(title: String, raters: &[String], kappa: &[Vec<Option<f64>>]) -> Self {
        let svg = plots::kappa_matrix(&title, raters, kappa);
        Self::new(title, svg)
    }

    pub fn balance(title: String, labels: &[&str], counts: &[u64]) -> Self {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let svg = plots::class_balance(&title, &labels, counts);
        Self::new(title, svg)
    }

    pub fn roc(title: String, series: &[plots::RocSeries]) -> Self {
        let svg = plots::roc_curves(&title, series);
        Self::new(title, svg)
    }

    pub fn reliability(title: String, bins: &[(f64, f64, u64)]) -> Self {
        let svg = plots::reliability(&title, bins);
        Self::new(title, svg)
    }
}
