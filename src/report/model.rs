//! The model report: a run's stored predictions scored against the consensus or one
//! rater, overall and per scanner, with subject-level bootstrap intervals; and the
//! comparison of several runs side by side (the ablation table).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::agreement::Task;
use super::plots::RocSeries;
use super::{Figure, ReportError, Value};
use crate::metrics::{
    BootstrapConfig, ConfusionMatrix, Estimate, MetricError, OperatingTarget, TriageBand,
    TriageDecision, Undefined, ZeroDivision, apply_temperature, bootstrap_percentile,
    expected_calibration_error, fit_temperature, rates_at, roc_auc, roc_auc_one_vs_rest, roc_curve,
    threshold_for,
};
use crate::rate::labels::image_labels;
use crate::store::Store;

pub const MODEL_SCHEMA: &str = "cdwqc.model/1";
pub const COMPARE_SCHEMA: &str = "cdwqc.compare/1";

/// What predictions are scored against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    /// The consensus label of each image (the labels training uses).
    Consensus,
    /// One rater's labels in force.
    Rater(String),
}

impl std::str::FromStr for Truth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" => Err("give `consensus` or a rater's name".into()),
            "consensus" => Ok(Truth::Consensus),
            name => Ok(Truth::Rater(name.to_string())),
        }
    }
}

impl Truth {
    pub fn name(&self) -> String {
        match self {
            Truth::Consensus => "consensus".into(),
            Truth::Rater(r) => format!("rater {r}"),
        }
    }
}

/// Which predicted images a report scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EvalSet {
    /// The held-out test subjects of the run's split.
    Test,
    /// Every image the run did not learn labels from: test, unlabelled, and images
    /// predicted by `infer` that were not in the split. A run without a split (an
    /// exported model) learned none of this store's labels: all its images.
    Unseen,
    /// Every predicted image with a truth label, training images included (optimistic).
    All,
}

impl std::fmt::Display for EvalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Test => "test",
            Self::Unseen => "unseen",
            Self::All => "all",
        })
    }
}

impl EvalSet {
    fn includes(self, set: Option<&str>) -> bool {
        match self {
            EvalSet::Test => set == Some("test"),
            EvalSet::Unseen => matches!(set, None | Some("test") | Some("unlabelled")),
            EvalSet::All => true,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            EvalSet::Test => "held-out test subjects of the run's split",
            EvalSet::Unseen => {
                "images the run did not learn labels from (test, unlabelled, not in the split)"
            }
            EvalSet::All => {
                "every predicted image with a truth label, training images included (optimistic)"
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub against: Truth,
    /// `None`: the test set when the run has a split, otherwise every prediction.
    pub set: Option<EvalSet>,
    pub bootstrap: BootstrapConfig,
    /// Draw the SVG plots (HTML output).
    pub figures: bool,
    /// Pick the decision threshold on the run's validation images that reaches this
    /// sensitivity or specificity for the last class (reject, bad, gado).
    pub target: Option<OperatingTarget>,
    /// Triage at this rate: thresholds picked on the validation images so that this
    /// share of the last class escapes automatic acceptance and this share of the
    /// others escapes automatic rejection; the band between goes to people.
    pub triage: Option<f64>,
    /// Score the images whose prediction failed (an unreadable file, a flagged
    /// registration) as predictions of this class, with all its probability, instead of
    /// leaving them out: what a warehouse does with an image its pipeline cannot prepare.
    pub failed_as: Option<String>,
}

impl ModelOptions {
    /// Options for reading thresholds off a run's validation images: no bootstrap
    /// replicates worth the time, no plots.
    pub fn thresholds_only() -> Self {
        Self {
            bootstrap: BootstrapConfig {
                replicates: 1,
                ..BootstrapConfig::default()
            },
            figures: false,
            ..Self::default()
        }
    }
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            against: Truth::Consensus,
            set: None,
            bootstrap: BootstrapConfig::default(),
            figures: true,
            target: None,
            triage: None,
            failed_as: None,
        }
    }
}

/// The stored facts of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub kind: Option<String>,
    pub method: Option<String>,
    pub preset: Option<String>,
    pub status: Option<String>,
    pub split_id: Option<String>,
    pub git_commit: Option<String>,
    pub label_snapshot: Option<String>,
    /// For an exported model's run: the SHA-256 of its weights, from its card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Temperature scaling fitted on the validation images at the end of training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_temperature: Option<f64>,
}

/// One-vs-rest metrics of one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    pub class: String,
    pub support: u64,
    /// This class against the rest (e.g. `bad` vs good + medium): the mean of its
    /// sensitivity and specificity, with its subject-level bootstrap 95% CI.
    pub balanced_accuracy_one_vs_rest: Value,
    pub sensitivity: Value,
    pub specificity: Value,
    pub precision: Value,
    pub f1: Value,
}

/// The scores of one set of predictions against their truth.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub images: u64,
    pub subjects: u64,
    /// With its subject-level percentile bootstrap 95% CI.
    pub balanced_accuracy: Value,
    pub balanced_accuracy_adjusted: Value,
    pub accuracy: Value,
    pub macro_f1: Value,
    pub mcc: Value,
    /// Binary tasks: the second class (reject, gado) as positive; quality: one-vs-rest
    /// macro average. With its bootstrap 95% CI.
    pub auc: Value,
    /// Mean |accuracy - confidence| over 10 confidence bins, weighted by bin size.
    pub expected_calibration_error: Value,
    pub per_class: Vec<ClassRow>,
    /// Rows: truth, columns: prediction, in category order.
    pub confusion: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScannerEvaluation {
    pub scanner: String,
    #[serde(flatten)]
    pub evaluation: Evaluation,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootstrapInfo {
    pub replicates: usize,
    pub seed: u64,
    pub confidence: f64,
    /// What is resampled.
    pub unit: &'static str,
}

impl From<&BootstrapConfig> for BootstrapInfo {
    fn from(c: &BootstrapConfig) -> Self {
        Self {
            replicates: c.replicates,
            seed: c.seed,
            confidence: c.confidence,
            unit: "subject",
        }
    }
}

/// One predicted image with its truth, as the evaluation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub image_id: i64,
    pub subject: String,
    pub scanner: Option<String>,
    pub truth: usize,
    pub predicted: usize,
    /// Class probabilities in category order.
    pub probabilities: Vec<f64>,
}

/// The whole model report; its JSON form is versioned by `schema`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub schema: &'static str,
    pub store: String,
    pub run: RunInfo,
    pub task: Task,
    pub categories: Vec<String>,
    pub against: String,
    pub set: EvalSet,
    pub set_description: &'static str,
    pub bootstrap: BootstrapInfo,
    /// Predictions stored for the run and task.
    pub predictions: u64,
    /// Images whose prediction failed (they have an error row).
    pub failed: u64,
    /// The class failed images were scored as (`--failed-as`); none: left out.
    pub failed_as: Option<String>,
    /// Scored images labelled reject because they do not register to the model's
    /// template (the prediction's `reason`), not by the network.
    pub not_registered: u64,
    /// Predictions outside the evaluated set.
    pub outside_set: u64,
    /// Predictions in the set whose image has no truth label.
    pub without_truth: u64,
    pub overall: Evaluation,
    /// Per scanner (vendor and field strength), when the set spans several.
    pub by_scanner: Vec<ScannerEvaluation>,
    /// Temperature scaling and the calibration error before and after it.
    pub calibration: CalibrationReport,
    /// The threshold for `--target-sensitivity` / `--target-specificity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<OperatingPoint>,
    /// Accept / review / reject bands for `--triage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triage: Option<TriageReport>,
    #[serde(skip)]
    pub samples: Vec<Sample>,
    #[serde(skip)]
    pub figures: Vec<Figure>,
}

fn db(store: &Store) -> impl Fn(duckdb::Error) -> ReportError + '_ {
    move |e| ReportError::Store(store.err(e))
}

fn run_info(store: &Store, run_id: &str) -> Result<Option<(RunInfo, Option<String>)>, ReportError> {
    let mut stmt = store
        .conn()
        .prepare(include_str!("../../sql/store/model_report_run.sql"))
        .map_err(db(store))?;
    let mut rows = stmt.query(duckdb::params![run_id]).map_err(db(store))?;
    let Some(r) = rows.next().map_err(db(store))? else {
        return Ok(None);
    };
    let get = |i: usize| -> Result<Option<String>, ReportError> { r.get(i).map_err(db(store)) };
    let info = RunInfo {
        run_id: run_id.to_string(),
        kind: get(1)?,
        method: get(3)?,
        preset: get(4)?,
        status: get(5)?,
        split_id: get(6)?,
        git_commit: get(8)?,
        label_snapshot: get(9)?,
        model_sha256: get(7)?.and_then(|c| {
            serde_json::from_str::<crate::model::card::ModelCard>(&c)
                .ok()
                .map(|card| card.weights.sha256)
                .or_else(|| {
                    crate::jobs::plan::TorchScriptRunConfig::parse(&c).map(|run| run.sha256)
                })
        }),
        started_at: get(10)?,
        finished_at: get(11)?,
        stored_temperature: get(12)?
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
            .and_then(|m| m["calibration"]["temperature"].as_f64()),
    };
    Ok(Some((info, get(2)?)))
}

/// The tasks a run has predictions for (TorchScript predictions stored before their runs
/// got a row have none).
fn predicted_tasks(store: &Store, run_id: &str) -> Result<Vec<String>, ReportError> {
    let mut stmt = store
        .conn()
        .prepare(include_str!("../../sql/store/predicted_tasks.sql"))
        .map_err(db(store))?;
    let rows = stmt
        .query_map(duckdb::params![run_id], |r| r.get::<_, String>(0))
        .map_err(db(store))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db(store))
}

/// Truth class per image for a task.
fn truth_labels(
    store: &Store,
    task: Task,
    against: &Truth,
) -> Result<HashMap<i64, usize>, ReportError> {
    match against {
        Truth::Consensus => Ok(image_labels(store)?
            .into_iter()
            .filter_map(|(id, l)| Some((id, l.class_of(task)?)))
            .collect()),
        Truth::Rater(rater) => {
            let column = match task {
                Task::Usable => 2,
                Task::Quality => 3,
                Task::Gado => 4,
            };
            let mut stmt = store
                .conn()
                .prepare(include_str!("../../sql/store/rater_task_labels.sql"))
                .map_err(db(store))?;
            let rows = stmt
                .query_map(duckdb::params![rater], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(column)?))
                })
                .map_err(db(store))?;
            let mut out = HashMap::new();
            let mut any = false;
            for row in rows {
                let (id, label) = row.map_err(db(store))?;
                any = true;
                if let Some(c) = label.and_then(|l| task.categories().iter().position(|c| *c == l))
                {
                    out.insert(id, c);
                }
            }
            if !any {
                return Err(ReportError::Input(format!(
                    "rater {rater} has no rating in force (cdwqc raters list)"
                )));
            }
            Ok(out)
        }
    }
}

struct PredictionRecord {
    image_id: i64,
    subject: String,
    label: Option<String>,
    probabilities: Option<String>,
    error: Option<String>,
    set: Option<String>,
    scanner: Option<String>,
    reason: Option<String>,
}

/// Builds the model report of one run.
pub fn build(store: &Store, run_id: &str, opts: &ModelOptions) -> Result<ModelReport, ReportError> {
    let (run, task_name) = match run_info(store, run_id)? {
        Some((info, task)) => (info, task),
        None => {
            let tasks = predicted_tasks(store, run_id)?;
            if tasks.is_empty() {
                return Err(ReportError::Input(format!(
                    "no run {run_id} in the store (cdwqc sql \"select run_id, task, method, status from runs\")"
                )));
            }
            let info = RunInfo {
                run_id: run_id.to_string(),
                ..RunInfo::default()
            };
            (info, tasks.into_iter().next())
        }
    };
    let task = task_name
        .as_deref()
        .and_then(Task::from_name)
        .ok_or_else(|| ReportError::Input(format!("run {run_id} has no known task")))?;
    let set = opts.set.unwrap_or(if run.split_id.is_some() {
        EvalSet::Test
    } else {
        EvalSet::All
    });
    // Without a split the run learned no label from this store (an exported model, a
    // TorchScript file): every image is unseen, but none is held-out test.
    if set == EvalSet::Test && run.split_id.is_none() {
        return Err(ReportError::Input(format!(
            "run {run_id} has no data split, so it has no test set: use --set unseen or --set all"
        )));
    }
    let truth = truth_labels(store, task, &opts.against)?;
    let mut stmt = store
        .conn()
        .prepare(include_str!("../../sql/store/model_report_predictions.sql"))
        .map_err(db(store))?;
    let records = stmt
        .query_map(duckdb::params![run_id, task.name(), run.split_id], |r| {
            Ok(PredictionRecord {
                image_id: r.get(0)?,
                subject: r.get(1)?,
                label: r.get(2)?,
                probabilities: r.get(3)?,
                error: r.get(4)?,
                set: r.get(5)?,
                scanner: r.get(6)?,
                reason: r.get(7)?,
            })
        })
        .map_err(db(store))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db(store))?;
    if records.is_empty() {
        return Err(ReportError::NoPredictions {
            run: run_id.to_string(),
            task: task.name().to_string(),
        });
    }
    let categories = task.categories();
    let failed_as = match &opts.failed_as {
        None => None,
        Some(name) => Some(categories.iter().position(|c| c == name).ok_or_else(|| {
            ReportError::Input(format!(
                "--failed-as {name}: task {} has the classes {}",
                task.name(),
                categories.join(", ")
            ))
        })?),
    };
    let (mut failed, mut outside_set, mut without_truth) = (0u64, 0u64, 0u64);
    let mut not_registered = 0u64;
    let mut samples = Vec::new();
    // Validation images: where temperature and operating points are fitted.
    let mut validation = Vec::new();
    for rec in &records {
        let in_set = set.includes(rec.set.as_deref());
        if !in_set && rec.set.as_deref() != Some("validation") {
            outside_set += 1;
            continue;
        }
        if !in_set {
            outside_set += 1;
        }
        let (predicted, probabilities) = match (&rec.label, &rec.probabilities, &rec.error) {
            (Some(label), Some(probs), None) => {
                let probabilities: Vec<f64> = serde_json::from_str(probs).map_err(|e| {
                    ReportError::Input(format!(
                        "run {run_id}: probabilities of image {} are not a list of numbers ({probs}): {e}",
                        rec.image_id
                    ))
                })?;
                let Some(predicted) = categories.iter().position(|c| c == label) else {
                    return Err(ReportError::Input(format!(
                        "run {run_id}: image {} has label {label}, not one of {}",
                        rec.image_id,
                        categories.join(", ")
                    )));
                };
                if probabilities.len() != categories.len() {
                    return Err(ReportError::Input(format!(
                        "run {run_id}: image {} has {} probabilities for {} classes",
                        rec.image_id,
                        probabilities.len(),
                        categories.len()
                    )));
                }
                (predicted, probabilities)
            }
            _ => {
                failed += u64::from(in_set);
                let Some(class) = failed_as else {
                    continue;
                };
                let mut one_hot = vec![0.0; categories.len()];
                one_hot[class] = 1.0;
                (class, one_hot)
            }
        };
        let Some(&truth) = truth.get(&rec.image_id) else {
            without_truth += u64::from(in_set);
            continue;
        };
        // A reject for want of a registration is no output of the network: it is
        // scored, but temperatures and thresholds are fitted on the network's outputs.
        if rec.reason.is_some() && rec.label.is_some() {
            if !in_set {
                continue;
            }
            not_registered += 1;
        }
        let target = if in_set {
            &mut samples
        } else {
            &mut validation
        };
        target.push(Sample {
            image_id: rec.image_id,
            subject: rec.subject.clone(),
            scanner: rec.scanner.clone(),
            truth,
            predicted,
            probabilities,
        });
    }
    let overall = evaluate(&samples, task, &opts.bootstrap);
    let mut scanners: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in &samples {
        let name = s.scanner.clone().unwrap_or_else(|| "unknown".into());
        scanners.entry(name).or_default().push(s.clone());
    }
    let by_scanner = if scanners.len() > 1 {
        scanners
            .into_iter()
            .map(|(scanner, group)| ScannerEvaluation {
                scanner,
                evaluation: evaluate(&group, task, &opts.bootstrap),
            })
            .collect()
    } else {
        Vec::new()
    };
    let calibration = calibration_report(run.stored_temperature, &validation, &samples);
    let operating_point = opts
        .target
        .map(|target| operating_point(target, &validation, &samples, task, &opts.bootstrap));
    let triage = opts
        .triage
        .map(|rate| triage_report(rate, &validation, &samples, task, &opts.bootstrap));
    let mut report = ModelReport {
        schema: MODEL_SCHEMA,
        store: store.path().display().to_string(),
        run,
        task,
        categories: categories.iter().map(|c| c.to_string()).collect(),
        against: opts.against.name(),
        set,
        set_description: set.describe(),
        bootstrap: BootstrapInfo::from(&opts.bootstrap),
        predictions: records.len() as u64,
        failed,
        failed_as: failed_as.map(|class| categories[class].to_string()),
        not_registered,
        outside_set,
        without_truth,
        overall,
        by_scanner,
        calibration,
        operating_point,
        triage,
        samples,
        figures: Vec::new(),
    };
    if opts.figures {
        report.figures = model_figures(&report);
    }
    Ok(report)
}

/// Temperature scaling of the run and what it does to the evaluated set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CalibrationReport {
    /// `stored` (fitted on the validation images at the end of training),
    /// `validation` (fitted now on the stored validation predictions), or none.
    pub source: Option<&'static str>,
    pub temperature: Option<f64>,
    pub validation_images: u64,
    /// Expected calibration error of the evaluated set, as predicted and after
    /// temperature scaling.
    pub ece_before: Value,
    pub ece_after: Value,
    /// Why there is no temperature, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undefined: Option<String>,
    /// The temperature sits on a bound of its search (validation images separated
    /// perfectly): where the fit stopped, not a calibration.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub at_bound: bool,
}

fn probabilities_and_truth(samples: &[Sample]) -> (Vec<Vec<f64>>, Vec<usize>) {
    samples
        .iter()
        .map(|s| (s.probabilities.clone(), s.truth))
        .unzip()
}

fn calibration_report(
    stored: Option<f64>,
    validation: &[Sample],
    samples: &[Sample],
) -> CalibrationReport {
    let (p, y) = probabilities_and_truth(samples);
    let ece =
        |p: &[Vec<f64>]| Value::from_estimate(expected_calibration_error(p, &y, CALIBRATION_BINS));
    let mut out = CalibrationReport {
        validation_images: validation.len() as u64,
        ece_before: ece(&p),
        ..CalibrationReport::default()
    };
    let (source, temperature) = match stored {
        Some(t) => (Some("stored"), Ok(t)),
        None => {
            let (vp, vy) = probabilities_and_truth(validation);
            (
                Some("validation"),
                fit_temperature(&vp, &vy).map(|t| t.temperature),
            )
        }
    };
    match temperature {
        Ok(t) => {
            out.source = source;
            out.temperature = Some(t);
            out.at_bound = crate::metrics::temperature_at_bound(t);
            let scaled: Vec<Vec<f64>> = p.iter().map(|row| apply_temperature(row, t)).collect();
            out.ece_after = ece(&scaled);
        }
        Err(e) => {
            out.undefined = Some(format!(
                "no temperature stored with the run and none can be fitted on its {} validation predictions: {}",
                validation.len(),
                e.undefined_reason()
                    .map_or_else(|| e.to_string(), |r| r.to_string())
            ));
            out.ece_after = Value::undefined_text("no temperature".into());
        }
    }
    out
}

/// A decision threshold picked on the validation images and its effect on the
/// evaluated set. The positive class is the task's last (reject, bad, gado), scored
/// by its predicted probability; an image is flagged when the score reaches the
/// threshold, and flagged images go to a person.
#[derive(Debug, Clone, Serialize)]
pub struct OperatingPoint {
    pub positive_class: String,
    /// `sensitivity` or `specificity`.
    pub target: &'static str,
    pub target_value: f64,
    pub threshold: Value,
    pub validation_images: u64,
    pub validation_sensitivity: Value,
    pub validation_specificity: Value,
    /// On the evaluated set, with subject-level bootstrap 95% CIs.
    pub sensitivity: Value,
    pub specificity: Value,
    /// Share of the evaluated images flagged for a person to review.
    pub review_share: Value,
}

/// Each sample's probability of the `positive` class, and whether it is of that class.
fn positive_scores(samples: &[Sample], positive: usize) -> (Vec<f64>, Vec<bool>) {
    samples
        .iter()
        .map(|s| (s.probabilities[positive], s.truth == positive))
        .unzip()
}

fn operating_point(
    target: OperatingTarget,
    validation: &[Sample],
    samples: &[Sample],
    task: Task,
    config: &BootstrapConfig,
) -> OperatingPoint {
    let positive = task.categories().len() - 1;
    let score = |s: &Sample| s.probabilities[positive];
    let (name, value) = match target {
        OperatingTarget::Sensitivity(v) => ("sensitivity", v),
        OperatingTarget::Specificity(v) => ("specificity", v),
    };
    let (v_scores, v_positive) = positive_scores(validation, positive);
    let threshold = threshold_for(&v_scores, &v_positive, target);
    let mut point = OperatingPoint {
        positive_class: task.categories()[positive].to_string(),
        target: name,
        target_value: value,
        threshold: Value::from_estimate(threshold.clone()),
        validation_images: validation.len() as u64,
        validation_sensitivity: Value::default(),
        validation_specificity: Value::default(),
        sensitivity: Value::default(),
        specificity: Value::default(),
        review_share: Value::default(),
    };
    let Ok(t) = threshold else {
        let why = point.threshold.clone();
        point.validation_sensitivity = why.clone();
        point.validation_specificity = why.clone();
        point.sensitivity = why.clone();
        point.specificity = why.clone();
        point.review_share = why;
        return point;
    };
    let rate = |r: Option<f64>, what: &str| {
        r.map_or_else(
            || Value::undefined_text(format!("no {what} image")),
            Value::of,
        )
    };
    let (vs, vp) = rates_at(&v_scores, &v_positive, t);
    point.validation_sensitivity = rate(vs, "positive");
    point.validation_specificity = rate(vp, "negative");
    let groups = subject_groups(samples);
    let rates = |it: &mut dyn Iterator<Item = &Sample>| -> (Vec<f64>, Vec<bool>) {
        it.map(|s| (score(s), s.truth == positive)).unzip()
    };
    let undefined = |r: Option<f64>| r.ok_or(MetricError::from(Undefined::SingleClass));
    point.sensitivity = with_bootstrap(samples, &groups, config, |it| {
        let (s, p) = rates(it);
        undefined(rates_at(&s, &p, t).0)
    });
    point.specificity = with_bootstrap(samples, &groups, config, |it| {
        let (s, p) = rates(it);
        undefined(rates_at(&s, &p, t).1)
    });
    point.review_share = with_bootstrap(samples, &groups, config, |it| {
        let (s, _) = rates(it);
        if s.is_empty() {
            return Err(Undefined::EmptyInput.into());
        }
        Ok(s.iter().filter(|v| **v >= t).count() as f64 / s.len() as f64)
    });
    point
}

/// Triage of the evaluated images by two thresholds picked on the validation images:
/// the model accepts the images it is sure are not of the last class, rejects those it
/// is sure are, and people rate the band between.
#[derive(Debug, Clone, Serialize)]
pub struct TriageReport {
    pub positive_class: String,
    /// The share of positives kept from automatic acceptance, and of negatives from
    /// automatic rejection, on the validation images.
    pub rate: f64,
    pub validation_images: u64,
    /// Accepted below this score (P of the last class), rejected at or above `reject`.
    pub accept_below: Value,
    pub reject_from: Value,
    /// On the evaluated set, with subject-level bootstrap 95% CIs.
    pub images: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub to_review: u64,
    /// Ratings people no longer make: the accepted and rejected images' share.
    pub ratings_saved_share: Value,
    /// Share of the positives not accepted automatically (found by the model or by the
    /// people who review the band).
    pub sensitivity: Value,
    /// Share of the negatives not rejected automatically.
    pub specificity: Value,
    /// Positives accepted automatically, and negatives rejected automatically.
    pub positives_accepted: u64,
    pub negatives_rejected: u64,
}

fn triage_report(
    rate: f64,
    validation: &[Sample],
    samples: &[Sample],
    task: Task,
    config: &BootstrapConfig,
) -> TriageReport {
    let positive = task.categories().len() - 1;
    let score = |s: &Sample| s.probabilities[positive];
    let (v_scores, v_positive) = positive_scores(validation, positive);
    let band = TriageBand::for_rate(&v_scores, &v_positive, rate);
    let mut report = TriageReport {
        positive_class: task.categories()[positive].to_string(),
        rate,
        validation_images: validation.len() as u64,
        accept_below: Value::default(),
        reject_from: Value::default(),
        images: samples.len() as u64,
        accepted: 0,
        rejected: 0,
        to_review: 0,
        ratings_saved_share: Value::default(),
        sensitivity: Value::default(),
        specificity: Value::default(),
        positives_accepted: 0,
        negatives_rejected: 0,
    };
    let band = match band {
        Ok(b) => b,
        Err(e) => {
            // No thresholds: the model decides nothing, people rate every image.
            report.to_review = report.images;
            let why = Value::undefined(&e);
            report.accept_below = why.clone();
            report.reject_from = why.clone();
            report.ratings_saved_share = why.clone();
            report.sensitivity = why.clone();
            report.specificity = why;
            return report;
        }
    };
    report.accept_below = Value::of(band.accept);
    report.reject_from = Value::of(band.reject);
    for s in samples {
        match band.decide(score(s)) {
            TriageDecision::Accept => {
                report.accepted += 1;
                report.positives_accepted += u64::from(s.truth == positive);
            }
            TriageDecision::Reject => {
                report.rejected += 1;
                report.negatives_rejected += u64::from(s.truth != positive);
            }
            TriageDecision::Review => report.to_review += 1,
        }
    }
    let groups = subject_groups(samples);
    report.ratings_saved_share = with_bootstrap(samples, &groups, config, |it| {
        let (mut n, mut saved) = (0usize, 0usize);
        for s in it {
            n += 1;
            saved += usize::from(band.decide(score(s)) != TriageDecision::Review);
        }
        if n == 0 {
            return Err(Undefined::EmptyInput.into());
        }
        Ok(saved as f64 / n as f64)
    });
    let share_of = |class_positive: bool, kept: fn(TriageDecision) -> bool| {
        with_bootstrap(samples, &groups, config, |it| {
            let (mut n, mut k) = (0usize, 0usize);
            for s in it.filter(|s| (s.truth == positive) == class_positive) {
                n += 1;
                k += usize::from(kept(band.decide(score(s))));
            }
            if n == 0 {
                return Err(Undefined::SingleClass.into());
            }
            Ok(k as f64 / n as f64)
        })
    };
    report.sensitivity = share_of(true, |d| d != TriageDecision::Accept);
    report.specificity = share_of(false, |d| d != TriageDecision::Reject);
    report
}

fn triage_section(d: &mut super::document::Document, t: &TriageReport) {
    d.heading(2, "Triage");
    d.paragraph(format!(
        "Two thresholds on P({c}) picked on {n} validation images so that {r} of the {c}          images escape automatic acceptance and {r} of the others escape automatic          rejection: the model accepts an image when P({c}) is below {a}, rejects it from          {b}, and people rate the band between. 95% CIs: bootstrap over subjects.",
        c = t.positive_class,
        n = t.validation_images,
        r = t.rate,
        a = t.accept_below.text(),
        b = t.reject_from.text()
    ));
    let share = |k: u64| {
        if t.images == 0 {
            "n/a".to_string()
        } else {
            format!("{k} ({:.1}%)", 100.0 * k as f64 / t.images as f64)
        }
    };
    d.table(
        &["", "value"],
        vec![
            vec!["images evaluated".into(), t.images.to_string()],
            vec!["accepted by the model".into(), share(t.accepted)],
            vec!["rejected by the model".into(), share(t.rejected)],
            vec!["to review by people".into(), share(t.to_review)],
            vec![
                "ratings saved [95% CI]".into(),
                t.ratings_saved_share.text(),
            ],
            vec![
                format!("{} found (model or review) [95% CI]", t.positive_class),
                t.sensitivity.text(),
            ],
            vec![
                format!("others not rejected by the model [95% CI]"),
                t.specificity.text(),
            ],
            vec![
                format!("{} accepted by the model (missed)", t.positive_class),
                t.positives_accepted.to_string(),
            ],
            vec![
                "others rejected by the model (lost)".into(),
                t.negatives_rejected.to_string(),
            ],
        ],
    );
}

fn calibration_section(d: &mut super::document::Document, r: &ModelReport) {
    let c = &r.calibration;
    d.heading(2, "Calibration");
    match (c.temperature, &c.undefined) {
        (Some(t), _) => d.paragraph(format!(
            "Temperature scaling T = {t:.4} ({}{}). Expected calibration error of the \
             evaluated images: {} as predicted, {} after scaling.",
            match c.source {
                Some("stored") => "fitted on the validation images at the end of training",
                _ => "fitted now on the run's validation predictions",
            },
            match (c.at_bound, t < 1.0) {
                (true, true) => {
                    "; at a bound of its search: the validation images are told apart \
                     perfectly, so no temperature is identifiable from them"
                }
                (true, false) => {
                    "; at a bound of its search: on the validation images the predictions \
                     are no better than uniform ones"
                }
                (false, _) => "",
            },
            c.ece_before.text(),
            c.ece_after.text()
        )),
        (None, Some(why)) => d.paragraph(format!(
            "Expected calibration error {} as predicted; {why}.",
            c.ece_before.text()
        )),
        (None, None) => {}
    }
    if let Some(op) = &r.operating_point {
        d.heading(2, "Operating point");
        d.paragraph(format!(
            "Threshold on P({}) picked on {} validation images for {} {}: an image is flagged \
             for review when P({}) reaches it. 95% CIs: bootstrap over subjects.",
            op.positive_class, op.validation_images, op.target, op.target_value, op.positive_class
        ));
        d.table(
            &["", "value"],
            vec![
                vec!["threshold".into(), op.threshold.text()],
                vec![
                    "validation sensitivity / specificity".into(),
                    format!(
                        "{} / {}",
                        op.validation_sensitivity.text(),
                        op.validation_specificity.text()
                    ),
                ],
                vec!["sensitivity [95% CI]".into(), op.sensitivity.text()],
                vec!["specificity [95% CI]".into(), op.specificity.text()],
                vec![
                    "share of images to review [95% CI]".into(),
                    op.review_share.text(),
                ],
            ],
        );
    }
}

/// Sample indices grouped by subject, so a bootstrap resamples whole subjects.
fn subject_groups(samples: &[Sample]) -> Vec<Vec<usize>> {
    let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_subject.entry(s.subject.as_str()).or_default().push(i);
    }
    by_subject.into_values().collect()
}

fn confusion_of<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    n_classes: usize,
) -> Result<ConfusionMatrix, MetricError> {
    let (truth, predicted): (Vec<usize>, Vec<usize>) =
        samples.map(|s| (s.truth, s.predicted)).unzip();
    ConfusionMatrix::from_indices(&truth, &predicted, n_classes)
}

fn balanced_accuracy<'a>(samples: impl Iterator<Item = &'a Sample>, k: usize) -> Estimate {
    confusion_of(samples, k)?.balanced_accuracy()
}

/// Balanced accuracy of one class against the others merged.
fn one_vs_rest_balanced_accuracy<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    class: usize,
) -> Estimate {
    let (truth, predicted): (Vec<usize>, Vec<usize>) = samples
        .map(|s| {
            (
                usize::from(s.truth == class),
                usize::from(s.predicted == class),
            )
        })
        .unzip();
    ConfusionMatrix::from_indices(&truth, &predicted, 2)?.balanced_accuracy()
}

fn auc<'a>(samples: impl Iterator<Item = &'a Sample>, k: usize) -> Estimate {
    let samples: Vec<&Sample> = samples.collect();
    if samples.is_empty() {
        return Err(Undefined::EmptyInput.into());
    }
    if k == 2 {
        let positive: Vec<bool> = samples.iter().map(|s| s.truth == 1).collect();
        let scores: Vec<f64> = samples.iter().map(|s| s.probabilities[1]).collect();
        roc_auc(&positive, &scores)
    } else {
        let truth: Vec<usize> = samples.iter().map(|s| s.truth).collect();
        let scores: Vec<f64> = samples
            .iter()
            .flat_map(|s| s.probabilities.iter().copied())
            .collect();
        roc_auc_one_vs_rest(&truth, &scores, k).map(|a| a.macro_average)
    }
}

/// A statistic with its subject-level bootstrap interval (no interval when the
/// bootstrap itself is undefined).
fn with_bootstrap<F>(
    samples: &[Sample],
    groups: &[Vec<usize>],
    config: &BootstrapConfig,
    statistic: F,
) -> Value
where
    F: Fn(&mut dyn Iterator<Item = &Sample>) -> Estimate,
{
    let point = statistic(&mut samples.iter());
    let value = match point {
        Ok(v) => v,
        Err(e) => return Value::undefined(&e),
    };
    let interval = bootstrap_percentile(groups.len(), config, |picked| {
        let mut it = picked
            .iter()
            .flat_map(|&g| groups[g].iter().map(|&i| &samples[i]));
        statistic(&mut it)
    });
    match interval {
        Ok(ci) => Value::with_ci(value, (ci.lower, ci.upper), None),
        Err(_) => Value::of(value),
    }
}

/// Scores one set of samples.
pub fn evaluate(samples: &[Sample], task: Task, config: &BootstrapConfig) -> Evaluation {
    let k = task.categories().len();
    let groups = subject_groups(samples);
    let matrix = confusion_of(samples.iter(), k);
    let from = |f: &dyn Fn(&ConfusionMatrix) -> Estimate| match &matrix {
        Ok(m) => Value::from_estimate(f(m)),
        Err(e) => Value::undefined(e),
    };
    let per_class = match &matrix {
        Ok(m) if !samples.is_empty() => m
            .per_class()
            .into_iter()
            .zip(task.categories())
            .enumerate()
            .map(|(index, (c, name))| ClassRow {
                class: name.to_string(),
                support: c.support,
                balanced_accuracy_one_vs_rest: with_bootstrap(samples, &groups, config, |it| {
                    one_vs_rest_balanced_accuracy(it, index)
                }),
                sensitivity: Value::from_estimate(c.sensitivity),
                specificity: Value::from_estimate(c.specificity),
                precision: Value::from_estimate(c.precision),
                f1: Value::from_estimate(c.f1),
            })
            .collect(),
        _ => Vec::new(),
    };
    Evaluation {
        images: samples.len() as u64,
        subjects: groups.len() as u64,
        balanced_accuracy: with_bootstrap(samples, &groups, config, |it| balanced_accuracy(it, k)),
        balanced_accuracy_adjusted: from(&|m| m.balanced_accuracy_adjusted()),
        accuracy: from(&|m| m.accuracy()),
        macro_f1: from(&|m| m.f1_macro(ZeroDivision::Zero)),
        mcc: from(&|m| m.mcc()),
        auc: with_bootstrap(samples, &groups, config, |it| auc(it, k)),
        expected_calibration_error: calibration_error(samples),
        per_class,
        confusion: matrix.map(|m| m.rows()).unwrap_or_default(),
    }
}

const CALIBRATION_BINS: usize = 10;

fn bin_of(p: f64) -> usize {
    ((p * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1)
}

fn calibration_error(samples: &[Sample]) -> Value {
    if samples.is_empty() {
        return Value::undefined(&Undefined::EmptyInput.into());
    }
    let mut bins = vec![(0.0f64, 0.0f64, 0u64); CALIBRATION_BINS];
    for s in samples {
        let confidence = s.probabilities[s.predicted];
        let b = &mut bins[bin_of(confidence)];
        b.0 += confidence;
        b.1 += f64::from(u8::from(s.truth == s.predicted));
        b.2 += 1;
    }
    let n = samples.len() as f64;
    Value::of(
        bins.iter()
            .filter(|b| b.2 > 0)
            .map(|(conf, correct, _)| (correct - conf).abs() / n)
            .sum(),
    )
}

/// Reliability bins: for binary tasks P(second class) against its observed frequency,
/// otherwise the top class's confidence against accuracy.
fn reliability_bins(samples: &[Sample], k: usize) -> Vec<(f64, f64, u64)> {
    let mut bins = vec![(0.0f64, 0.0f64, 0u64); CALIBRATION_BINS];
    for s in samples {
        let (p, hit) = if k == 2 {
            (s.probabilities[1], s.truth == 1)
        } else {
            (s.probabilities[s.predicted], s.truth == s.predicted)
        };
        let b = &mut bins[bin_of(p)];
        b.0 += p;
        b.1 += f64::from(u8::from(hit));
        b.2 += 1;
    }
    bins.into_iter()
        .filter(|b| b.2 > 0)
        .map(|(p, hit, n)| (p / n as f64, hit / n as f64, n))
        .collect()
}

fn roc_series(samples: &[Sample], k: usize, name: &str) -> Vec<RocSeries> {
    let classes: Vec<usize> = if k == 2 { vec![1] } else { (0..k).collect() };
    classes
        .into_iter()
        .filter_map(|c| {
            let positive: Vec<bool> = samples.iter().map(|s| s.truth == c).collect();
            let scores: Vec<f64> = samples.iter().map(|s| s.probabilities[c]).collect();
            let curve = roc_curve(&positive, &scores).ok()?;
            Some(RocSeries {
                name: if k == 2 {
                    name.to_string()
                } else {
                    format!("{name} {}", c)
                },
                points: curve.fpr.into_iter().zip(curve.tpr).collect(),
                auc: roc_auc(&positive, &scores).ok(),
            })
        })
        .collect()
}

fn model_figures(r: &ModelReport) -> Vec<Figure> {
    let task = r.task;
    let k = r.categories.len();
    let labels = task.categories();
    let mut figures = vec![Figure::confusion(
        format!("{} · confusion", r.run.run_id),
        labels,
        &r.overall.confusion,
        &r.against,
        "prediction",
    )];
    let mut roc = roc_series(&r.samples, k, &r.run.run_id);
    if k > 2 {
        for (s, c) in roc.iter_mut().zip(labels) {
            s.name = format!("{c} vs rest");
        }
    }
    let roc_title = if k == 2 {
        format!("{} · ROC, {} as positive", r.run.run_id, labels[1])
    } else {
        format!("{} · ROC, one vs rest", r.run.run_id)
    };
    figures.push(Figure::roc(roc_title, &roc));
    figures.push(Figure::reliability(
        if k == 2 {
            format!("{} · reliability of P({})", r.run.run_id, labels[1])
        } else {
            format!("{} · reliability of the top class", r.run.run_id)
        },
        &reliability_bins(&r.samples, k),
    ));
    let mut balance = vec![0u64; k];
    for s in &r.samples {
        balance[s.truth] += 1;
    }
    figures.push(Figure::balance(
        format!("{} · truth classes ({})", r.run.run_id, r.against),
        labels,
        &balance,
    ));
    figures
}

fn run_title(r: &ModelReport) -> String {
    let mut parts = vec![r.task.name().to_string()];
    if let Some(m) = &r.run.method {
        parts.push(m.clone());
    }
    if let Some(p) = &r.run.preset {
        parts.push(format!("preset {p}"));
    }
    parts.join(", ")
}

fn counts_text(r: &ModelReport) -> String {
    let failed = match &r.failed_as {
        Some(class) => format!("{} failed to load, scored as {class}", r.failed),
        None => format!("{} failed to load", r.failed),
    };
    let not_registered = if r.not_registered > 0 {
        format!(
            " ({} of them rejected because they do not register to the model's template)",
            r.not_registered
        )
    } else {
        String::new()
    };
    format!(
        "{} predictions stored: {} scored ({} subjects){not_registered}, {} outside the set, {} without a truth label, {failed}.",
        r.predictions, r.overall.images, r.overall.subjects, r.outside_set, r.without_truth,
    )
}

/// The model report as a document for Markdown and HTML.
pub fn document(r: &ModelReport) -> super::document::Document {
    use super::document::Document;
    let mut d = Document::new(format!(
        "Model report · {} ({})",
        r.run.run_id,
        run_title(r)
    ));
    d.paragraph(format!(
        "Store {} · truth: {} · set: {} · status {} · 95% CIs: percentile bootstrap over subjects, {} replicates, seed {}.",
        r.store,
        r.against,
        r.set_description,
        r.run.status.as_deref().unwrap_or("unknown"),
        r.bootstrap.replicates,
        r.bootstrap.seed
    ));
    if let Some(sha) = &r.run.model_sha256 {
        d.paragraph(format!(
            "Predictions of an exported model (cdwqc infer --model), weights SHA-256 {sha}."
        ));
    }
    d.paragraph(counts_text(r));
    if r.overall.images == 0 {
        d.paragraph(
            "No prediction to score: the set is empty or its images have no truth label. Try `--set unseen` or `--set all`, or rate more images.",
        );
        return d;
    }
    let e = &r.overall;
    let auc_name = if r.categories.len() == 2 {
        format!("ROC AUC ({} as positive)", r.categories[1])
    } else {
        "ROC AUC (one vs rest, macro)".to_string()
    };
    d.table(
        &["metric", "value"],
        vec![
            vec![
                "balanced accuracy [95% CI]".into(),
                e.balanced_accuracy.text(),
            ],
            vec![format!("{auc_name} [95% CI]"), e.auc.text()],
            vec!["accuracy".into(), e.accuracy.text()],
            vec![
                "balanced accuracy, chance-adjusted".into(),
                e.balanced_accuracy_adjusted.text(),
            ],
            vec!["macro F1".into(), e.macro_f1.text()],
            vec!["MCC".into(), e.mcc.text()],
            vec![
                "expected calibration error".into(),
                e.expected_calibration_error.text(),
            ],
        ],
    );
    calibration_section(&mut d, r);
    if let Some(t) = &r.triage {
        triage_section(&mut d, t);
    }
    d.heading(2, "Per class");
    d.table(
        &[
            "class",
            "support",
            "balanced accuracy, one vs rest [95% CI]",
            "sensitivity",
            "specificity",
            "precision",
            "F1",
        ],
        e.per_class
            .iter()
            .map(|c| {
                vec![
                    c.class.clone(),
                    c.support.to_string(),
                    c.balanced_accuracy_one_vs_rest.text(),
                    c.sensitivity.text(),
                    c.specificity.text(),
                    c.precision.text(),
                    c.f1.text(),
                ]
            })
            .collect(),
    );
    d.heading(2, "Confusion matrix (rows: truth, columns: prediction)");
    let mut headers: Vec<&str> = vec!["truth \\ prediction"];
    headers.extend(r.categories.iter().map(String::as_str));
    d.table(
        &headers,
        r.categories
            .iter()
            .zip(&e.confusion)
            .map(|(c, row)| {
                std::iter::once(c.clone())
                    .chain(row.iter().map(u64::to_string))
                    .collect()
            })
            .collect(),
    );
    if !r.by_scanner.is_empty() {
        d.heading(2, "Per scanner");
        d.table(
            &[
                "scanner",
                "images",
                "balanced accuracy [95% CI]",
                "AUC [95% CI]",
            ],
            r.by_scanner
                .iter()
                .map(|s| {
                    vec![
                        s.scanner.clone(),
                        s.evaluation.images.to_string(),
                        s.evaluation.balanced_accuracy.text(),
                        s.evaluation.auc.text(),
                    ]
                })
                .collect(),
        );
    }
    d.figures(r.figures.clone());
    d
}

/// One run's row in a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub run_id: String,
    pub task: Task,
    pub method: Option<String>,
    pub status: Option<String>,
    pub set: EvalSet,
    pub images: u64,
    pub subjects: u64,
    pub balanced_accuracy: Value,
    pub auc: Value,
    pub macro_f1: Value,
    pub mcc: Value,
}

/// A method's balanced accuracy minus the baseline's on the images both scored, with a
/// paired subject-level bootstrap interval.
#[derive(Debug, Clone, Serialize)]
pub struct PairedDifference {
    pub task: Task,
    pub run_id: String,
    pub method: Option<String>,
    pub baseline_run_id: String,
    pub baseline_method: String,
    pub images: u64,
    pub difference: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub schema: &'static str,
    pub store: String,
    pub against: String,
    pub bootstrap: BootstrapInfo,
    pub runs: Vec<CompareRow>,
    /// Runs left out because they have no stored predictions.
    pub without_predictions: Vec<String>,
    /// Every method against `target-only` of the same task, where both were scored.
    pub versus_baseline: Vec<PairedDifference>,
    #[serde(skip)]
    pub figures: Vec<Figure>,
}

/// The baseline every other method is compared with: trained on the target's
/// labelled images alone.
pub const BASELINE_METHOD: &str = "target-only";

/// Methods in the order of the paper's ablation table.
const METHOD_ORDER: [&str; 5] = [
    "ssda",
    "ssda-no-domain",
    "finetune",
    "target-only",
    "source-only",
];

fn method_rank(m: Option<&str>) -> usize {
    m.and_then(|m| METHOD_ORDER.iter().position(|x| *x == m))
        .unwrap_or(METHOD_ORDER.len())
}

/// Run ids matching the given names; `*` matches any text (`demo-*`).
pub fn resolve_runs(store: &Store, patterns: &[String]) -> Result<Vec<String>, ReportError> {
    let mut stmt = store
        .conn()
        .prepare(include_str!("../../sql/store/scored_runs.sql"))
        .map_err(db(store))?;
    let known = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db(store))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db(store))?;
    let mut out: Vec<String> = Vec::new();
    for p in patterns {
        let matched: Vec<&String> = known.iter().filter(|r| glob_match(p, r)).collect();
        if matched.is_empty() {
            return Err(ReportError::Input(format!(
                "no run matches {p} (cdwqc sql \"select run_id, task, method, status from runs\")"
            )));
        }
        for m in matched {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
    }
    Ok(out)
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Compares runs: one row each, and every method against the target-only baseline.
pub fn compare(
    store: &Store,
    run_ids: &[String],
    opts: &ModelOptions,
) -> Result<Comparison, ReportError> {
    let quiet = ModelOptions {
        figures: false,
        ..opts.clone()
    };
    let mut reports = Vec::new();
    let mut missing = Vec::new();
    for id in run_ids {
        match build(store, id, &quiet) {
            Ok(r) => reports.push(r),
            Err(ReportError::NoPredictions { run, .. }) => missing.push(run),
            Err(e) => return Err(e),
        }
    }
    reports.sort_by(|a, b| {
        (
            a.task.name(),
            method_rank(a.run.method.as_deref()),
            &a.run.run_id,
        )
            .cmp(&(
                b.task.name(),
                method_rank(b.run.method.as_deref()),
                &b.run.run_id,
            ))
    });
    let runs = reports
        .iter()
        .map(|r| CompareRow {
            run_id: r.run.run_id.clone(),
            task: r.task,
            method: r.run.method.clone(),
            status: r.run.status.clone(),
            set: r.set,
            images: r.overall.images,
            subjects: r.overall.subjects,
            balanced_accuracy: r.overall.balanced_accuracy.clone(),
            auc: r.overall.auc.clone(),
            macro_f1: r.overall.macro_f1.clone(),
            mcc: r.overall.mcc.clone(),
        })
        .collect();
    let scored: Vec<BTreeSet<i64>> = reports
        .iter()
        .map(|r| r.samples.iter().map(|s| s.image_id).collect())
        .collect();
    let is_baseline = |r: &ModelReport| r.run.method.as_deref() == Some(BASELINE_METHOD);
    let mut versus_baseline = Vec::new();
    for (i, run) in reports.iter().enumerate() {
        let baselines: Vec<usize> = (0..reports.len())
            .filter(|&j| j != i && reports[j].task == run.task && is_baseline(&reports[j]))
            .collect();
        for j in baseline_partners(i, is_baseline(run), &baselines, &scored) {
            versus_baseline.push(paired_difference(run, &reports[j], &opts.bootstrap));
        }
    }
    let figures = if opts.figures {
        compare_figures(&reports)
    } else {
        Vec::new()
    };
    Ok(Comparison {
        schema: COMPARE_SCHEMA,
        store: store.path().display().to_string(),
        against: opts.against.name(),
        bootstrap: BootstrapInfo::from(&opts.bootstrap),
        runs,
        without_predictions: missing,
        versus_baseline,
        figures,
    })
}

/// Which baselines (indices into `scored`) a run is paired with. A baseline scored on
/// exactly the run's images (the same split: the same seed on the same labels) is its
/// baseline; a run with none such is paired with every baseline of its task, each pair
/// on the images both scored. Two baselines are paired only when scored on the same
/// images (two presets or recipes on one split), and once.
fn baseline_partners(
    run: usize,
    run_is_baseline: bool,
    baselines: &[usize],
    scored: &[BTreeSet<i64>],
) -> Vec<usize> {
    let same: Vec<usize> = baselines
        .iter()
        .copied()
        .filter(|&b| scored[b] == scored[run])
        .collect();
    if run_is_baseline {
        same.into_iter().filter(|&b| b < run).collect()
    } else if same.is_empty() {
        baselines.to_vec()
    } else {
        same
    }
}

fn paired_difference(
    run: &ModelReport,
    base: &ModelReport,
    config: &BootstrapConfig,
) -> PairedDifference {
    let k = run.categories.len();
    let base_by_image: HashMap<i64, &Sample> =
        base.samples.iter().map(|s| (s.image_id, s)).collect();
    // Pairs of (run, baseline) samples of the same image and truth.
    let pairs: Vec<(&Sample, &Sample)> = run
        .samples
        .iter()
        .filter_map(|s| {
            let b = base_by_image.get(&s.image_id)?;
            (b.truth == s.truth).then_some((s, *b))
        })
        .collect();
    let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (s, _)) in pairs.iter().enumerate() {
        by_subject.entry(s.subject.as_str()).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = by_subject.into_values().collect();
    let diff = |idx: &mut dyn Iterator<Item = usize>| -> Estimate {
        let picked: Vec<usize> = idx.collect();
        let a = balanced_accuracy(picked.iter().map(|&i| pairs[i].0), k)?;
        let b = balanced_accuracy(picked.iter().map(|&i| pairs[i].1), k)?;
        Ok(a - b)
    };
    let difference = match diff(&mut (0..pairs.len())) {
        Err(e) => Value::undefined(&e),
        Ok(point) => {
            match bootstrap_percentile(groups.len(), config, |chosen| {
                diff(&mut chosen.iter().flat_map(|&g| groups[g].iter().copied()))
            }) {
                Ok(ci) => Value::with_ci(point, (ci.lower, ci.upper), None),
                Err(_) => Value::of(point),
            }
        }
    };
    PairedDifference {
        task: run.task,
        run_id: run.run.run_id.clone(),
        method: run.run.method.clone(),
        baseline_run_id: base.run.run_id.clone(),
        baseline_method: BASELINE_METHOD.into(),
        images: pairs.len() as u64,
        difference,
    }
}

/// A run's name in a legend: its method, or its id where another run of the same
/// method is shown beside it (three seeds of one method are three curves).
fn run_label(run_id: &str, method: Option<&str>, methods: &[Option<&str>]) -> String {
    match method {
        Some(m) if methods.iter().filter(|x| **x == Some(m)).count() == 1 => m.to_string(),
        _ => run_id.to_string(),
    }
}

fn compare_figures(reports: &[ModelReport]) -> Vec<Figure> {
    let mut figures = Vec::new();
    for task in Task::ALL {
        let of_task: Vec<&ModelReport> = reports.iter().filter(|r| r.task == task).collect();
        if of_task.is_empty() || task.categories().len() != 2 {
            continue;
        }
        let methods: Vec<Option<&str>> = of_task.iter().map(|r| r.run.method.as_deref()).collect();
        let series: Vec<RocSeries> = of_task
            .iter()
            .flat_map(|r| {
                let name = run_label(&r.run.run_id, r.run.method.as_deref(), &methods);
                roc_series(&r.samples, 2, &name)
            })
            .collect();
        if !series.is_empty() {
            figures.push(Figure::roc(
                format!(
                    "{} · ROC by run, {} as positive",
                    task.name(),
                    task.categories()[1]
                ),
                &series,
            ));
        }
    }
    figures
}

/// What a paired difference says, in words.
fn verdict(d: &PairedDifference) -> String {
    // Two target-only runs (seeds, presets, exported models) are told apart by name.
    let than = if d.method.as_deref() == Some(BASELINE_METHOD) {
        d.baseline_run_id.as_str()
    } else {
        BASELINE_METHOD
    };
    match (d.difference.value, d.difference.ci95) {
        (Some(_), Some([lo, _])) if lo > 0.0 => format!("better than {than}"),
        (Some(_), Some([_, hi])) if hi < 0.0 => format!("worse than {than}"),
        (Some(_), Some(_)) => "no difference shown (the interval includes 0)".into(),
        (Some(_), None) => "no interval".into(),
        (None, _) => "undefined".into(),
    }
}

/// The comparison as a document: the ablation table (rows: methods, columns: tasks),
/// every run, and each method against the target-only baseline.
pub fn compare_document(c: &Comparison) -> super::document::Document {
    use super::document::Document;
    let mut d = Document::new("Model comparison");
    d.paragraph(format!(
        "Store {} · truth: {} · each run scored on its own set (column `set`) · 95% CIs: percentile bootstrap over subjects, {} replicates, seed {}.",
        c.store, c.against, c.bootstrap.replicates, c.bootstrap.seed
    ));
    if !c.without_predictions.is_empty() {
        d.paragraph(format!(
            "Left out, no stored predictions (run `cdwqc infer --run RUN`): {}.",
            c.without_predictions.join(", ")
        ));
    }
    let tasks: Vec<Task> = Task::ALL
        .into_iter()
        .filter(|t| c.runs.iter().any(|r| r.task == *t))
        .collect();
    let mut methods: Vec<Option<String>> = Vec::new();
    for r in &c.runs {
        if !methods.contains(&r.method) {
            methods.push(r.method.clone());
        }
    }
    methods.sort_by_key(|m| method_rank(m.as_deref()));
    let mut headers: Vec<String> = vec!["method".into()];
    for t in &tasks {
        headers.push(format!("{} balanced accuracy [95% CI]", t.name()));
        headers.push(format!("{} AUC", t.name()));
    }
    let rows = methods
        .iter()
        .map(|m| {
            let mut row = vec![m.clone().unwrap_or_else(|| "(none)".into())];
            for t in &tasks {
                let runs: Vec<&CompareRow> = c
                    .runs
                    .iter()
                    .filter(|r| r.task == *t && &r.method == m)
                    .collect();
                let cell = |f: &dyn Fn(&CompareRow) -> String| {
                    if runs.is_empty() {
                        "-".to_string()
                    } else {
                        runs.iter().map(|r| f(r)).collect::<Vec<_>>().join("; ")
                    }
                };
                row.push(cell(&|r| r.balanced_accuracy.text()));
                row.push(cell(&|r| match r.auc.value {
                    Some(v) => format!("{v:.3}"),
                    None => "undefined".into(),
                }));
            }
            row
        })
        .collect();
    d.heading(2, "Balanced accuracy by method and task");
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    d.table(&header_refs, rows);
    d.heading(2, "Runs");
    d.table(
        &[
            "run",
            "task",
            "method",
            "status",
            "set",
            "images (subjects)",
            "balanced accuracy [95% CI]",
            "AUC [95% CI]",
            "macro F1",
            "MCC",
        ],
        c.runs
            .iter()
            .map(|r| {
                vec![
                    r.run_id.clone(),
                    r.task.name().into(),
                    r.method.clone().unwrap_or_default(),
                    r.status.clone().unwrap_or_default(),
                    r.set.to_string(),
                    format!("{} ({})", r.images, r.subjects),
                    r.balanced_accuracy.text(),
                    r.auc.text(),
                    r.macro_f1.text(),
                    r.mcc.text(),
                ]
            })
            .collect(),
    );
    if !c.versus_baseline.is_empty() {
        d.heading(2, "Against the target-only baseline (paired, same images)");
        d.table(
            &[
                "task",
                "method",
                "images",
                "balanced accuracy difference [95% CI]",
                "reading",
            ],
            c.versus_baseline
                .iter()
                .map(|p| {
                    // Several runs of one method (seeds, exported models) or several
                    // baselines: the method alone would not say which pair a row is.
                    let shared = c
                        .versus_baseline
                        .iter()
                        .filter(|q| q.task == p.task && q.method == p.method)
                        .count()
                        > 1;
                    vec![
                        p.task.name().into(),
                        match (&p.method, shared) {
                            (Some(method), false) => method.clone(),
                            _ => format!("{} vs {}", p.run_id, p.baseline_run_id),
                        },
                        p.images.to_string(),
                        p.difference.signed(),
                        verdict(p),
                    ]
                })
                .collect(),
        );
    }
    d.figures(c.figures.clone());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_is_paired_with_the_baseline_scored_on_its_images() {
        let set = |ids: &[i64]| ids.iter().copied().collect::<BTreeSet<i64>>();
        // 0: ssda seed 1, 1: ssda seed 2, 2: ssda of a seed with no baseline,
        // 3: target-only seed 1, 4: target-only seed 2, 5: target-only seed 1 on
        // another preset (the same images as 3).
        let scored = [
            set(&[1, 2, 3]),
            set(&[2, 3, 4]),
            set(&[1, 4, 5]),
            set(&[1, 2, 3]),
            set(&[2, 3, 4]),
            set(&[1, 2, 3]),
        ];
        let baselines =
            |run: usize| -> Vec<usize> { [3, 4, 5].into_iter().filter(|&b| b != run).collect() };
        assert_eq!(baseline_partners(0, false, &baselines(0), &scored), [3, 5]);
        assert_eq!(baseline_partners(1, false, &baselines(1), &scored), [4]);
        assert_eq!(
            baseline_partners(2, false, &baselines(2), &scored),
            [3, 4, 5]
        );
        // Baselines: only on the same images, and each pair once.
        assert!(baseline_partners(3, true, &baselines(3), &scored).is_empty());
        assert!(baseline_partners(4, true, &baselines(4), &scored).is_empty());
        assert_eq!(baseline_partners(5, true, &baselines(5), &scored), [3]);
    }

    #[test]
    fn a_verdict_names_the_baseline_run_when_both_are_target_only() {
        let pair = |method: &str, ci: [f64; 2]| PairedDifference {
            task: Task::Usable,
            run_id: "b".into(),
            method: Some(method.into()),
            baseline_run_id: "model:a".into(),
            baseline_method: BASELINE_METHOD.into(),
            images: 10,
            difference: Value::with_ci(0.1, (ci[0], ci[1]), None),
        };
        assert_eq!(
            verdict(&pair("ssda", [0.05, 0.2])),
            "better than target-only"
        );
        assert_eq!(
            verdict(&pair("target-only", [0.05, 0.2])),
            "better than model:a"
        );
        assert_eq!(
            verdict(&pair("target-only", [-0.3, -0.1])),
            "worse than model:a"
        );
        assert!(verdict(&pair("ssda", [-0.1, 0.2])).starts_with("no difference shown"));
    }

    #[test]
    fn a_legend_names_a_run_by_its_method_unless_the_method_repeats() {
        let methods = [Some("ssda"), Some("ssda"), Some("target-only"), None];
        assert_eq!(
            run_label("u-ssda-seed1", Some("ssda"), &methods),
            "u-ssda-seed1"
        );
        assert_eq!(
            run_label("u-target", Some("target-only"), &methods),
            "target-only"
        );
        assert_eq!(run_label("model:x", None, &methods), "model:x");
    }

    fn sample(subject: &str, truth: usize, predicted: usize, p1: f64) -> Sample {
        Sample {
            image_id: 0,
            subject: subject.into(),
            scanner: None,
            truth,
            predicted,
            probabilities: vec![1.0 - p1, p1],
        }
    }

    #[test]
    fn triage_counts_each_band_and_what_the_model_got_wrong() {
        let config = BootstrapConfig {
            replicates: 50,
            seed: 1,
            confidence: 0.95,
        };
        // Validation: every reject scores 0.3 or more, every usable image under 0.75.
        let validation: Vec<Sample> = [
            (0, 0.1),
            (0, 0.2),
            (1, 0.3),
            (0, 0.4),
            (1, 0.6),
            (0, 0.7),
            (1, 0.8),
            (1, 0.9),
        ]
        .iter()
        .enumerate()
        .map(|(i, (truth, p))| sample(&format!("v{i}"), *truth, 0, *p))
        .collect();
        let evaluated: Vec<Sample> = [
            (0, 0.05), // accepted
            (1, 0.2),  // a reject accepted: missed
            (0, 0.5),  // review
            (1, 0.5),  // review
            (0, 0.8),  // a usable image rejected: lost
            (1, 0.95), // rejected
        ]
        .iter()
        .enumerate()
        .map(|(i, (truth, p))| sample(&format!("s{i}"), *truth, 0, *p))
        .collect();
        let t = triage_report(0.9, &validation, &evaluated, Task::Usable, &config);
        assert_eq!(t.accept_below.value, Some(0.3));
        assert!((t.reject_from.value.expect("reject") - 0.75).abs() < 1e-12);
        assert_eq!((t.accepted, t.rejected, t.to_review), (2, 2, 2));
        assert_eq!((t.positives_accepted, t.negatives_rejected), (1, 1));
        assert_eq!(t.ratings_saved_share.value, Some(4.0 / 6.0));
        assert_eq!(t.sensitivity.value, Some(2.0 / 3.0));
        assert_eq!(t.specificity.value, Some(2.0 / 3.0));
        assert!(t.ratings_saved_share.ci95.is_some());
        // One class in validation: no thresholds, people rate everything.
        let t = triage_report(0.9, &validation[..2], &evaluated, Task::Usable, &config);
        assert_eq!(t.accept_below.value, None);
        assert_eq!((t.accepted, t.rejected, t.to_review), (0, 0, 6));
    }

    #[test]
    fn evaluation_matches_hand_counts_and_bootstraps_subjects() {
        let samples = vec![
            sample("a", 0, 0, 0.1),
            sample("a", 0, 0, 0.2),
            sample("b", 0, 1, 0.6),
            sample("c", 1, 1, 0.9),
            sample("d", 1, 0, 0.4),
            sample("e", 1, 1, 0.7),
        ];
        let config = BootstrapConfig {
            replicates: 200,
            seed: 1,
            confidence: 0.95,
        };
        let e = evaluate(&samples, Task::Usable, &config);
        assert_eq!(e.images, 6);
        assert_eq!(e.subjects, 5);
        assert_eq!(e.confusion, vec![vec![2, 1], vec![1, 2]]);
        let ba = e.balanced_accuracy.value.unwrap();
        assert!((ba - (2.0 / 3.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        let [lo, hi] = e.balanced_accuracy.ci95.unwrap();
        assert!(lo <= ba && ba <= hi && lo >= 0.0 && hi <= 1.0);
        // 3 positives x 3 negatives: positive scores 0.9, 0.4, 0.7 vs 0.1, 0.2, 0.6.
        let auc = e.auc.value.unwrap();
        assert!((auc - 8.0 / 9.0).abs() < 1e-12, "{auc}");
        assert_eq!(e.per_class[1].support, 3);
        // The same seed gives the same interval.
        let again = evaluate(&samples, Task::Usable, &config);
        assert_eq!(again.balanced_accuracy.ci95, e.balanced_accuracy.ci95);
    }

    #[test]
    fn quality_reports_each_class_against_the_rest() {
        let three = |subject: &str, truth: usize, predicted: usize| {
            let mut probabilities = vec![0.1; 3];
            probabilities[predicted] = 0.8;
            Sample {
                image_id: 0,
                subject: subject.into(),
                scanner: None,
                truth,
                predicted,
                probabilities,
            }
        };
        // Truth bad (2) twice: one found; the four others: one called bad.
        let samples = vec![
            three("a", 0, 0),
            three("b", 0, 2),
            three("c", 1, 1),
            three("d", 1, 0),
            three("e", 2, 2),
            three("f", 2, 1),
        ];
        let config = BootstrapConfig {
            replicates: 100,
            seed: 1,
            confidence: 0.95,
        };
        let e = evaluate(&samples, Task::Quality, &config);
        let bad = &e.per_class[2];
        assert_eq!(bad.class, "bad");
        // Sensitivity 1/2, specificity 3/4.
        let ba = bad.balanced_accuracy_one_vs_rest.value.unwrap();
        assert!((ba - (0.5 + 0.75) / 2.0).abs() < 1e-12, "{ba}");
        assert!(bad.balanced_accuracy_one_vs_rest.ci95.is_some());
        // Binary tasks: either class against the other is the balanced accuracy.
        let u = evaluate(
            &[
                sample("a", 0, 0, 0.1),
                sample("b", 1, 0, 0.2),
                sample("c", 1, 1, 0.9),
            ],
            Task::Usable,
            &config,
        );
        assert_eq!(
            u.per_class[1].balanced_accuracy_one_vs_rest.value,
            u.balanced_accuracy.value
        );
    }

    #[test]
    fn empty_and_single_class_sets_are_undefined_not_invented() {
        let config = BootstrapConfig {
            replicates: 50,
            ..BootstrapConfig::default()
        };
        let e = evaluate(&[], Task::Usable, &config);
        assert!(e.balanced_accuracy.value.is_none());
        assert!(e.auc.undefined.is_some());
        let one_class = vec![sample("a", 0, 0, 0.1), sample("b", 0, 1, 0.8)];
        let e = evaluate(&one_class, Task::Usable, &config);
        assert!(e.auc.value.is_none(), "AUC needs both classes");
        assert!(e.balanced_accuracy_adjusted.value.is_none());
    }

    #[test]
    fn a_temperature_at_its_search_bound_is_flagged() {
        let evaluated = vec![sample("a", 1, 1, 0.7), sample("b", 0, 0, 0.2)];
        // Fitted now on validation images the model separates perfectly.
        let separated = vec![sample("v1", 1, 1, 0.7), sample("v2", 0, 0, 0.2)];
        let fitted = calibration_report(None, &separated, &evaluated);
        assert_eq!(fitted.source, Some("validation"));
        assert!(fitted.at_bound, "{fitted:?}");
        // Stored with the run at the bound, or an ordinary stored temperature.
        assert!(calibration_report(Some(0.001), &[], &evaluated).at_bound);
        let ordinary = calibration_report(Some(1.5), &[], &evaluated);
        assert!(!ordinary.at_bound);
        assert!(
            serde_json::to_value(&ordinary)
                .expect("json")
                .get("at_bound")
                .is_none()
        );
    }

    #[test]
    fn calibration_error_of_a_perfectly_calibrated_bin_is_zero() {
        // Four images predicted with confidence 0.75, three right: calibrated.
        let samples = vec![
            sample("a", 1, 1, 0.75),
            sample("b", 1, 1, 0.75),
            sample("c", 1, 1, 0.75),
            sample("d", 0, 1, 0.75),
        ];
        let ece = calibration_error(&samples).value.unwrap();
        assert!(ece.abs() < 1e-12, "{ece}");
        let bins = reliability_bins(&samples, 2);
        assert_eq!(bins, vec![(0.75, 0.75, 4)]);
    }

    #[test]
    fn globs_match_run_names() {
        assert!(glob_match("demo-*", "demo-usable-ssda"));
        assert!(glob_match("*-ssda", "demo-usable-ssda"));
        assert!(glob_match("demo-*-ssda", "demo-usable-ssda"));
        assert!(!glob_match("demo-*-ssda", "demo-usable-ssda-no-domain"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn truth_parses_consensus_or_a_rater() {
        assert_eq!("consensus".parse::<Truth>(), Ok(Truth::Consensus));
        assert_eq!("ana".parse::<Truth>(), Ok(Truth::Rater("ana".into())));
        assert!("".parse::<Truth>().is_err());
    }

    #[test]
    fn paired_rows_name_their_runs_when_a_method_has_several() {
        let pair = |run: &str, method: &str, base: &str| PairedDifference {
            task: Task::Usable,
            run_id: run.into(),
            method: Some(method.into()),
            baseline_run_id: base.into(),
            baseline_method: BASELINE_METHOD.into(),
            images: 150,
            difference: Value::with_ci(0.075, (0.018, 0.138), None),
        };
        let comparison = |pairs: Vec<PairedDifference>| Comparison {
            schema: COMPARE_SCHEMA,
            store: "s.duckdb".into(),
            against: "consensus".into(),
            bootstrap: BootstrapInfo::from(&BootstrapConfig::default()),
            runs: Vec::new(),
            without_predictions: Vec::new(),
            versus_baseline: pairs,
            figures: Vec::new(),
        };
        let one = compare_document(&comparison(vec![pair("u-ssda", "ssda", "u-target")]));
        assert!(
            one.markdown().contains("| usable | ssda | 150 |"),
            "{}",
            one.markdown()
        );
        let several = compare_document(&comparison(vec![
            pair("model:a", "target-only", "model:b"),
            pair("model:b", "target-only", "model:a"),
        ]))
        .markdown();
        assert!(
            several.contains("| usable | model:a vs model:b | 150 |")
                && several.contains("| usable | model:b vs model:a | 150 |"),
            "{several}"
        );
    }
}
