//! The inter-rater agreement report: for each task, every pair of raters with shared
//! images and all raters together, overall and per scanner.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Figure, ReportError, Value};
use crate::metrics::{
    ConfusionMatrix, ContingencyTable, DawidSkeneConfig, Level, Ratings, SubjectCounts, Weighting,
    cohen_kappa, dawid_skene, fleiss_kappa, gwet_ac1, krippendorff_alpha, pairwise_agreement,
    percent_agreement,
};
use crate::store::Store;
use crate::store::dashboard::AgreementGlance;

/// The prediction tasks and their categories, in ordinal order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Usable,
    Quality,
    Gado,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::Usable, Task::Quality, Task::Gado];

    pub fn name(self) -> &'static str {
        match self {
            Task::Usable => "usable",
            Task::Quality => "quality",
            Task::Gado => "gado",
        }
    }

    /// The task of a stored name (`usable`, `quality`, `gado`).
    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn categories(self) -> &'static [&'static str] {
        match self {
            Task::Usable => &["usable", "reject"],
            Task::Quality => &["good", "medium", "bad"],
            Task::Gado => &["no_gado", "gado"],
        }
    }

    /// Unweighted kappa for binary tasks, quadratic for the ordinal quality grade.
    pub fn weighting(self) -> Weighting {
        match self {
            Task::Quality => Weighting::Quadratic,
            _ => Weighting::Unweighted,
        }
    }
}

fn weighting_name(w: Weighting) -> &'static str {
    match w {
        Weighting::Unweighted => "unweighted",
        Weighting::Linear => "linear",
        Weighting::Quadratic => "quadratic",
    }
}

#[derive(Debug, Clone, Default)]
pub struct AgreementOptions {
    /// BIDS suffix to restrict to (e.g. FLAIR).
    pub sequence: Option<String>,
    /// Raters to include; all when empty.
    pub raters: Vec<String>,
}

/// Two raters compared on the images both rated.
#[derive(Debug, Clone, Serialize)]
pub struct PairAgreement {
    pub rater_a: String,
    pub rater_b: String,
    pub n: u64,
    pub percent_agreement: Value,
    /// Cohen's kappa (weighting per task) with its Fleiss-Cohen-Everitt 95% CI.
    pub kappa: Value,
    /// Rater b scored against rater a as the truth: the figure the paper compares
    /// models with.
    pub human_balanced_accuracy: Value,
    /// Rows: rater a, columns: rater b, in category order.
    pub confusion: Vec<Vec<u64>>,
}

/// All raters together on one set of images.
#[derive(Debug, Clone, Serialize)]
pub struct GroupAgreement {
    pub images: u64,
    pub ratings: u64,
    /// Images rated by two or more raters.
    pub images_multiply_rated: u64,
    pub percent_agreement_pairwise: Value,
    /// Fleiss' kappa on the images rated by every included rater.
    pub fleiss_kappa: Value,
    pub fleiss_images: u64,
    /// Krippendorff's alpha (nominal for binary tasks, ordinal for quality), missing
    /// ratings allowed.
    pub krippendorff_alpha: Value,
    /// Gwet's AC1 with its standard error and 95% CI.
    pub gwet_ac1: Value,
    /// Labels given by all raters, per category.
    pub class_counts: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskAgreement {
    pub task: Task,
    pub categories: Vec<String>,
    pub kappa_weighting: &'static str,
    pub overall: GroupAgreement,
    pub pairs: Vec<PairAgreement>,
    /// Per scanner (manufacturer, model, field strength from the sidecars), where known.
    pub by_scanner: Vec<(String, GroupAgreement)>,
    /// Each rater's estimated confusion matrix (Dawid-Skene).
    pub reliability: RaterReliability,
}

/// The Dawid-Skene fit of one task: the latent class prior, each rater's confusion
/// matrix and where the EM stopped.
#[derive(Debug, Clone, Serialize)]
pub struct RaterReliability {
    pub method: &'static str,
    pub max_iterations: usize,
    pub tolerance: f64,
    /// E/M iterations run after the majority-vote start.
    pub iterations: usize,
    pub converged: bool,
    /// Evidence lower bound per rating at the last iteration.
    pub final_loss: Option<f64>,
    /// Estimated share of each class among the rated images.
    pub priors: Vec<f64>,
    pub raters: Vec<RaterConfusion>,
    /// Why there is no fit (no labels), when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undefined: Option<String>,
}

/// One rater's estimated behaviour on one task.
#[derive(Debug, Clone, Serialize)]
pub struct RaterConfusion {
    pub rater: String,
    pub ratings: u64,
    /// Rows: latent true class, columns: the class the rater gave; P(given | true).
    pub confusion: Vec<Vec<f64>>,
    /// Per class: P(gives c | true c).
    pub sensitivity: Vec<f64>,
    /// Per class: P(does not give c | true class is another), weighted by the prior.
    pub specificity: Vec<Option<f64>>,
}

fn reliability(ratings: &Ratings, raters: &[String]) -> RaterReliability {
    let config = DawidSkeneConfig::default();
    let mut out = RaterReliability {
        method: "dawid-skene",
        max_iterations: config.max_iterations,
        tolerance: config.tolerance,
        iterations: 0,
        converged: false,
        final_loss: None,
        priors: Vec::new(),
        raters: Vec::new(),
        undefined: None,
    };
    let model = match dawid_skene(ratings, &config) {
        Ok(m) => m,
        Err(e) => {
            out.undefined = Some(
                e.undefined_reason()
                    .map_or_else(|| e.to_string(), |r| r.to_string()),
            );
            return out;
        }
    };
    let k = ratings.n_categories();
    for (r, name) in raters.iter().enumerate() {
        let Some(confusion) = &model.confusion[r] else {
            continue;
        };
        let given = (0..ratings.n_subjects())
            .filter(|&s| ratings.subject(s)[r].is_some())
            .count() as u64;
        out.raters.push(RaterConfusion {
            rater: name.clone(),
            ratings: given,
            confusion: confusion.clone(),
            sensitivity: (0..k).map(|c| confusion[c][c]).collect(),
            specificity: (0..k).map(|c| model.specificity(r, c)).collect(),
        });
    }
    out.iterations = model.iterations;
    out.converged = model.converged;
    out.final_loss = model.loss_history.last().copied();
    out.priors = model.priors;
    out
}

/// The whole report; its JSON form is versioned by `schema`.
#[derive(Debug, Clone, Serialize)]
pub struct AgreementReport {
    pub schema: &'static str,
    pub store: String,
    pub sequence: Option<String>,
    pub raters: Vec<String>,
    pub tasks: Vec<TaskAgreement>,
    #[serde(skip)]
    pub figures: Vec<Figure>,
}

pub const AGREEMENT_SCHEMA: &str = "cdwqc.agreement/1";

/// The labels in force as the store hands them over: per image, each rater's packed
/// task labels (`sql/store/rater_label_patterns.sql`).
struct LabelPatterns {
    /// The raters with a label in force, by name; an image's codes are indexed by
    /// position here.
    raters: Vec<String>,
    scanners: Vec<String>,
    /// Image ids in ascending order.
    images: Vec<i64>,
    image_scanner: Vec<Option<usize>>,
    /// `images.len() x raters.len()` codes: usable + 3 * quality + 12 * gado, each
    /// 0 for no label, else 1 + the category's index.
    codes: Vec<u8>,
}

/// Raters packed into one BIGINT of the query, 6 bits each.
const RATERS_PER_BLOCK: usize = 10;

impl LabelPatterns {
    /// The category index rater `rater` gave image `image` for the task, if any.
    fn label(&self, image: usize, rater: usize, task: Task) -> Option<usize> {
        let code = self.codes[image * self.raters.len() + rater];
        let value = match task {
            Task::Usable => code % 3,
            Task::Quality => (code / 3) % 4,
            Task::Gado => code / 12,
        };
        (value > 0).then(|| usize::from(value) - 1)
    }
}

fn load(store: &Store, sequence: Option<&str>) -> Result<LabelPatterns, ReportError> {
    use duckdb::arrow::array::{Array, AsArray};
    use duckdb::arrow::datatypes::Int64Type;

    let db = |e| store.err(e);
    let bad =
        |what: &str| ReportError::Input(format!("unexpected label row from the store: {what}"));
    let mut stmt = store
        .conn()
        .prepare(include_str!("../../sql/store/rater_label_patterns.sql"))
        .map_err(db)?;
    let mut raters: Vec<Option<String>> = Vec::new();
    let mut scanners: Vec<Option<String>> = Vec::new();
    // (image id, block of raters, scanner index, packed codes)
    let mut rows: Vec<(i64, usize, Option<usize>, i64)> = Vec::new();
    // Whole columns at a time (200,000 images are 200,000 rows): no per-cell lookups.
    for batch in stmt.query_arrow(duckdb::params![sequence]).map_err(db)? {
        let integers = |i: usize| {
            batch
                .column(i)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad("a column is not BIGINT"))
        };
        let (kind, image_id, slot, scanner, codes) = (
            integers(0)?,
            integers(1)?,
            integers(2)?,
            integers(4)?,
            integers(5)?,
        );
        let name = batch
            .column(3)
            .as_string_opt::<i32>()
            .ok_or_else(|| bad("names are not text"))?;
        for row in 0..batch.num_rows() {
            let index = |column: &duckdb::arrow::array::Int64Array| {
                usize::try_from(column.value(row)).map_err(|_| bad("negative index"))
            };
            let slot = index(slot)?;
            match kind.value(row) {
                0 | 1 => {
                    let names = if kind.value(row) == 0 {
                        &mut raters
                    } else {
                        &mut scanners
                    };
                    if slot >= names.len() {
                        names.resize(slot + 1, None);
                    }
                    names[slot] = Some(name.value(row).to_string());
                }
                _ => rows.push((
                    image_id.value(row),
                    slot,
                    if scanner.is_null(row) {
                        None
                    } else {
                        Some(index(scanner)?)
                    },
                    codes.value(row),
                )),
            }
        }
    }
    let named = |names: Vec<Option<String>>| -> Result<Vec<String>, ReportError> {
        names
            .into_iter()
            .map(|n| n.ok_or_else(|| bad("a name is missing")))
            .collect()
    };
    let (raters, scanners) = (named(raters)?, named(scanners)?);
    rows.sort_unstable_by_key(|&(image_id, block, _, _)| (image_id, block));

    // Unpacked codes per image and stored rater, then only the raters with a label.
    let mut images = Vec::new();
    let mut image_scanner = Vec::new();
    let mut codes: Vec<u8> = Vec::new();
    for &(image_id, block, scanner, packed) in &rows {
        if images.last() != Some(&image_id) {
            images.push(image_id);
            image_scanner.push(scanner);
            codes.resize(codes.len() + raters.len(), 0);
        }
        if scanner.is_some_and(|s| s >= scanners.len()) {
            return Err(bad("scanner index out of range"));
        }
        let row_start = (images.len() - 1) * raters.len();
        for within in 0..RATERS_PER_BLOCK {
            let code = ((packed >> (6 * within)) & 0x3f) as u8;
            if code == 0 {
                continue;
            }
            let rater = block * RATERS_PER_BLOCK + within;
            if rater >= raters.len() || code >= 36 {
                return Err(bad("label code out of range"));
            }
            codes[row_start + rater] = code;
        }
    }
    let mut labelled = vec![false; raters.len()];
    for row in codes.chunks(raters.len().max(1)) {
        for (l, &code) in labelled.iter_mut().zip(row) {
            *l |= code != 0;
        }
    }
    let kept: Vec<usize> = (0..raters.len()).filter(|&r| labelled[r]).collect();
    if kept.len() < raters.len() {
        codes = codes
            .chunks(raters.len())
            .flat_map(|row| kept.iter().map(move |&r| row[r]))
            .collect();
    }
    Ok(LabelPatterns {
        raters: kept.iter().map(|&r| raters[r].clone()).collect(),
        scanners,
        images,
        image_scanner,
        codes,
    })
}

/// One rater's task labels in force for one image (usable, quality, gado).
pub(crate) struct LabelRow {
    pub image_id: i64,
    pub rater: String,
    pub labels: [Option<String>; 3],
}

/// The raters' task labels in force that `opts` selects, one row per image and rater.
pub(crate) fn load_labels(
    store: &Store,
    opts: &AgreementOptions,
) -> Result<Vec<LabelRow>, ReportError> {
    let patterns = load(store, opts.sequence.as_deref())?;
    let mut out = Vec::new();
    for (image, &image_id) in patterns.images.iter().enumerate() {
        for (rater, name) in patterns.raters.iter().enumerate() {
            if !opts.raters.is_empty() && !opts.raters.contains(name) {
                continue;
            }
            let labels = Task::ALL.map(|task| {
                patterns
                    .label(image, rater, task)
                    .map(|c| task.categories()[c].to_string())
            });
            if labels.iter().all(Option::is_none) {
                continue;
            }
            out.push(LabelRow {
                image_id,
                rater: name.clone(),
                labels,
            });
        }
    }
    Ok(out)
}

/// Builds the agreement report from the ratings in force.
pub fn build(store: &Store, opts: &AgreementOptions) -> Result<AgreementReport, ReportError> {
    let patterns = load(store, opts.sequence.as_deref())?;
    let mut raters = patterns.raters.clone();
    raters.sort();
    if !opts.raters.is_empty() {
        for wanted in &opts.raters {
            if !raters.contains(wanted) {
                return Err(ReportError::Input(format!(
                    "rater {wanted} has no rating in force{}",
                    opts.sequence
                        .as_ref()
                        .map(|s| format!(" on {s} images"))
                        .unwrap_or_default()
                )));
            }
        }
        raters.clone_from(&opts.raters);
    }
    // Stored rater -> column of the report's matrix (None: not asked for).
    let columns: Vec<Option<usize>> = patterns
        .raters
        .iter()
        .map(|name| raters.iter().position(|x| x == name))
        .collect();
    let mut tasks = Vec::new();
    let mut figures = Vec::new();
    for task in Task::ALL.iter() {
        let categories = task.categories();
        // One matrix row per image with a label for the task, in image_id order.
        let mut image_ids: Vec<i64> = Vec::new();
        let mut image_scanner: Vec<Option<usize>> = Vec::new();
        let mut cells: Vec<Option<usize>> = Vec::new();
        let mut row = vec![None; raters.len()];
        for (image, &image_id) in patterns.images.iter().enumerate() {
            row.fill(None);
            let mut any = false;
            for (stored, column) in columns.iter().enumerate() {
                if let (Some(column), Some(label)) = (column, patterns.label(image, stored, *task))
                {
                    row[*column] = Some(label);
                    any = true;
                }
            }
            if any {
                image_ids.push(image_id);
                image_scanner.push(patterns.image_scanner[image]);
                cells.extend_from_slice(&row);
            }
        }
        let all = Ratings::new(cells, raters.len().max(1), categories.len())
            .map_err(|e| ReportError::Input(e.to_string()))?;
        let overall = group(&all, *task);
        let mut pairs = Vec::new();
        let mut kappa_grid = vec![vec![None; raters.len()]; raters.len()];
        for a in 0..raters.len() {
            kappa_grid[a][a] = Some(1.0);
            for b in (a + 1)..raters.len() {
                let table = all
                    .pair_table(a, b)
                    .map_err(|e| ReportError::Input(e.to_string()))?;
                if table.total() == 0 {
                    continue;
                }
                let pair = pair_agreement(&raters[a], &raters[b], &table, *task);
                kappa_grid[a][b] = pair.kappa.value;
                kappa_grid[b][a] = pair.kappa.value;
                if pairs.len() < 6 {
                    figures.push(Figure::confusion(
                        format!("{} · {} vs {}", task.name(), raters[a], raters[b]),
                        categories,
                        &pair.confusion,
                        &raters[a],
                        &raters[b],
                    ));
                }
                pairs.push(pair);
            }
        }
        if raters.len() > 1 {
            figures.push(Figure::kappa(
                format!("{} · Cohen's kappa by rater pair", task.name()),
                &raters,
                &kappa_grid,
            ));
        }
        figures.push(Figure::balance(
            format!("{} · labels given, all raters", task.name()),
            categories,
            &overall.class_counts,
        ));
        let mut scanners: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (subject, scanner) in image_scanner.iter().enumerate() {
            if let Some(name) = scanner.and_then(|s| patterns.scanners.get(s)) {
                scanners.entry(name).or_default().push(subject);
            }
        }
        let mut by_scanner = Vec::new();
        if scanners.len() > 1 {
            for (name, subjects) in scanners {
                let ratings = all
                    .select_subjects(&subjects)
                    .map_err(|e| ReportError::Input(e.to_string()))?;
                by_scanner.push((name.to_string(), group(&ratings, *task)));
            }
        }
        tasks.push(TaskAgreement {
            task: *task,
            categories: categories.iter().map(|c| c.to_string()).collect(),
            kappa_weighting: weighting_name(task.weighting()),
            overall,
            pairs,
            by_scanner,
            reliability: reliability(&all, &raters),
        });
    }
    Ok(AgreementReport {
        schema: AGREEMENT_SCHEMA,
        store: store.path().display().to_string(),
        sequence: opts.sequence.clone(),
        raters,
        tasks,
        figures,
    })
}

fn pair_agreement(a: &str, b: &str, table: &ContingencyTable, task: Task) -> PairAgreement {
    let k = table.n_categories();
    let confusion: Vec<Vec<u64>> = (0..k)
        .map(|r| (0..k).map(|c| table.get(r, c)).collect())
        .collect();
    let kappa = match cohen_kappa(table, task.weighting()) {
        Ok(c) => Value::coefficient(c.kappa, Some(c.ci95), Some(c.std_kappa), table.total()),
        Err(e) => Value::undefined(&e),
    };
    let human_ba = ConfusionMatrix::from_rows(&confusion)
        .map_err(|e| e.to_string())
        .and_then(|m| m.balanced_accuracy().map_err(|e| e.to_string()));
    PairAgreement {
        rater_a: a.to_string(),
        rater_b: b.to_string(),
        n: table.total(),
        percent_agreement: Value::from_estimate(percent_agreement(table)),
        kappa,
        human_balanced_accuracy: match human_ba {
            Ok(v) => Value::of(v),
            Err(e) => Value::undefined_text(e),
        },
        confusion,
    }
}

/// The all-raters statistics the report and the dashboard share.
struct AllRaters {
    percent_agreement_pairwise: Value,
    fleiss_kappa: Value,
    fleiss_images: u64,
    krippendorff_alpha: Value,
}

/// From the labels per category of each image; Fleiss' kappa keeps the images labelled
/// by all `n_raters` raters, since it needs the same number of labels per image.
fn all_raters(counts: &SubjectCounts, n_raters: usize, task: Task) -> AllRaters {
    let level = if task == Task::Quality {
        Level::Ordinal
    } else {
        Level::Nominal
    };
    let complete: Vec<usize> = counts
        .rows()
        .enumerate()
        .filter(|(_, row)| row.iter().sum::<u32>() as usize == n_raters)
        .map(|(i, _)| i)
        .collect();
    let fleiss = counts
        .select_subjects(&complete)
        .and_then(|c| fleiss_kappa(&c));
    AllRaters {
        percent_agreement_pairwise: Value::from_estimate(pairwise_agreement(counts)),
        fleiss_kappa: match fleiss {
            Ok(f) => Value::of(f.kappa),
            Err(e) => Value::undefined(&e),
        },
        fleiss_images: complete.len() as u64,
        krippendorff_alpha: Value::from_estimate(krippendorff_alpha(counts, level)),
    }
}

/// The tasks the dashboard's agreement panel shows.
pub const GLANCE_TASKS: [Task; 2] = [Task::Usable, Task::Quality];

/// Agreement at a glance, for the dashboard: per task of [`GLANCE_TASKS`], over the
/// images two or more raters labelled, the report's all-raters statistics (pairwise
/// agreement, Fleiss' kappa, Krippendorff's alpha), from label counts grouped in SQL
/// so that a large store stays cheap. The numbers equal the report's: images with a
/// single label add nothing to any of them.
pub fn at_a_glance(store: &Store) -> Result<Vec<AgreementGlance>, ReportError> {
    let (patterns, raters) = store.label_patterns()?;
    let mut out = Vec::new();
    for task in GLANCE_TASKS {
        let mut rows: Vec<Vec<u32>> = Vec::new();
        for p in &patterns {
            let counts: &[u32] = match task {
                Task::Usable => &p.usable,
                Task::Quality => &p.quality,
                Task::Gado => continue,
            };
            if counts.iter().sum::<u32>() >= 2 {
                rows.extend(std::iter::repeat_n(counts.to_vec(), p.images as usize));
            }
        }
        let counts = SubjectCounts::from_rows(&rows, task.categories().len())
            .map_err(|e| ReportError::Input(e.to_string()))?;
        let all = all_raters(&counts, raters as usize, task);
        out.push(AgreementGlance {
            task: task.name().to_string(),
            images: rows.len() as u64,
            percent_agreement: all.percent_agreement_pairwise.value,
            fleiss_kappa: all.fleiss_kappa.value,
            fleiss_images: all.fleiss_images,
            krippendorff_alpha: all.krippendorff_alpha.value,
        });
    }
    Ok(out)
}

fn group(ratings: &Ratings, task: Task) -> GroupAgreement {
    let counts = ratings.subject_counts();
    let per_image: Vec<u32> = counts.rows().map(|r| r.iter().sum()).collect();
    let class_counts = counts.category_totals();
    let all = all_raters(&counts, ratings.n_raters(), task);
    GroupAgreement {
        images: ratings.n_subjects() as u64,
        ratings: per_image.iter().map(|&n| u64::from(n)).sum(),
        images_multiply_rated: per_image.iter().filter(|&&n| n >= 2).count() as u64,
        percent_agreement_pairwise: all.percent_agreement_pairwise,
        fleiss_kappa: all.fleiss_kappa,
        fleiss_images: all.fleiss_images,
        krippendorff_alpha: all.krippendorff_alpha,
        gwet_ac1: match gwet_ac1(&counts) {
            Ok(g) => Value::coefficient(g.coefficient, g.ci95.ok(), g.se.ok(), g.n_subjects as u64),
            Err(e) => Value::undefined(&e),
        },
        class_counts,
    }
}

/// The report as a document for Markdown and HTML.
pub fn document(report: &AgreementReport) -> super::document::Document {
    use super::document::Document;
    let mut d = Document::new(match &report.sequence {
        Some(s) => format!("Inter-rater agreement · {s}"),
        None => "Inter-rater agreement".to_string(),
    });
    d.paragraph(format!(
        "Store {} · raters: {} · ratings in force (latest per image and rater, undos applied).",
        report.store,
        if report.raters.is_empty() {
            "none".to_string()
        } else {
            report.raters.join(", ")
        }
    ));
    if report.raters.is_empty() {
        d.paragraph("No ratings yet: import some with `cdwqc ratings import FILE --rater NAME` or rate with `cdwqc rate`.");
        return d;
    }
    for t in &report.tasks {
        d.heading(
            2,
            format!("Task: {} ({})", t.task.name(), t.categories.join(" / ")),
        );
        let o = &t.overall;
        d.paragraph(format!(
            "{} images, {} ratings, {} images rated by two or more raters. Kappa weighting: {}.",
            o.images, o.ratings, o.images_multiply_rated, t.kappa_weighting
        ));
        d.table(
            &["all raters", "value"],
            vec![
                vec![
                    "percent agreement (pairwise)".into(),
                    o.percent_agreement_pairwise.text(),
                ],
                vec![
                    format!("Fleiss' kappa ({} images rated by all)", o.fleiss_images),
                    o.fleiss_kappa.text(),
                ],
                vec!["Krippendorff's alpha".into(), o.krippendorff_alpha.text()],
                vec!["Gwet's AC1 [95% CI]".into(), o.gwet_ac1.text()],
                vec![
                    "labels given".into(),
                    t.categories
                        .iter()
                        .zip(&o.class_counts)
                        .map(|(c, n)| format!("{c} {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ],
            ],
        );
        if !t.pairs.is_empty() {
            d.heading(3, "Rater pairs");
            d.table(
                &[
                    "rater a",
                    "rater b",
                    "n",
                    "agreement",
                    "Cohen's kappa [95% CI]",
                    "human balanced accuracy (b vs a)",
                    "confusion (rows a, cols b)",
                ],
                t.pairs
                    .iter()
                    .map(|p| {
                        vec![
                            p.rater_a.clone(),
                            p.rater_b.clone(),
                            p.n.to_string(),
                            p.percent_agreement.text(),
                            p.kappa.text(),
                            p.human_balanced_accuracy.text(),
                            p.confusion
                                .iter()
                                .map(|r| r.iter().map(u64::to_string).collect::<Vec<_>>().join(" "))
                                .collect::<Vec<_>>()
                                .join(" / "),
                        ]
                    })
                    .collect(),
            );
        }
        if !t.by_scanner.is_empty() {
            d.heading(3, "Per scanner");
            d.table(
                &[
                    "scanner",
                    "images",
                    "agreement",
                    "Krippendorff's alpha",
                    "Gwet's AC1",
                ],
                t.by_scanner
                    .iter()
                    .map(|(name, g)| {
                        vec![
                            name.clone(),
                            g.images.to_string(),
                            g.percent_agreement_pairwise.text(),
                            g.krippendorff_alpha.text(),
                            g.gwet_ac1.text(),
                        ]
                    })
                    .collect(),
            );
        }
        reliability_section(&mut d, t);
        let prefix = format!("{} ·", t.task.name());
        d.figures(
            report
                .figures
                .iter()
                .filter(|f| f.title.starts_with(&prefix))
                .cloned()
                .collect(),
        );
    }
    d
}

fn reliability_section(d: &mut super::document::Document, t: &TaskAgreement) {
    let r = &t.reliability;
    d.heading(3, "Rater reliability (Dawid-Skene)");
    if let Some(why) = &r.undefined {
        d.paragraph(format!("No estimate: {why}."));
        return;
    }
    d.paragraph(format!(
        "Latent truth by EM from the majority vote ({} iterations, {} after at most {} with \
         tolerance {:e} on the evidence lower bound per rating{}). Estimated class shares: {}.",
        r.iterations,
        if r.converged {
            "converged"
        } else {
            "NOT converged"
        },
        r.max_iterations,
        r.tolerance,
        r.final_loss
            .map(|l| format!(", final {l:.5}"))
            .unwrap_or_default(),
        t.categories
            .iter()
            .zip(&r.priors)
            .map(|(c, p)| format!("{c} {p:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut header = vec!["rater".to_string(), "labels".to_string()];
    header.extend(t.categories.iter().map(|c| format!("sensitivity {c}")));
    header.extend(t.categories.iter().map(|c| format!("specificity {c}")));
    header.push("P(given | true), rows true".to_string());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let rows = r
        .raters
        .iter()
        .map(|rc| {
            let mut row = vec![rc.rater.clone(), rc.ratings.to_string()];
            row.extend(rc.sensitivity.iter().map(|v| format!("{v:.3}")));
            row.extend(
                rc.specificity
                    .iter()
                    .map(|v| v.map_or("undefined".into(), |v| format!("{v:.3}"))),
            );
            row.push(
                rc.confusion
                    .iter()
                    .map(|r| {
                        r.iter()
                            .map(|v| format!("{v:.2}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect::<Vec<_>>()
                    .join(" / "),
            );
            row
        })
        .collect();
    d.table(&header, rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three raters on five images: two rated by all, two by two raters, one by one.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        store
            .conn()
            .execute_batch(
                "INSERT INTO images (path, root, rel_path, status, subject, suffix, file_size, mtime_ns)
                 SELECT 'p' || i, 'r', 'p' || i, 'ok', 's' || i, 'FLAIR', 0, 0 FROM range(1, 6) t(i);
                 INSERT INTO ratings (image_id, rater, usable, motion, contrast, noise, code,
                                      protocol_version, source)
                 VALUES (1, 'ann', true, 0, 0, 0, '', '1', 't'), (1, 'bob', true, 1, 0, 0, '', '1', 't'),
                        (1, 'cid', true, 0, 0, 0, '', '1', 't'), (2, 'ann', false, 0, 0, 0, '', '1', 't'),
                        (2, 'bob', false, 0, 0, 0, '', '1', 't'), (2, 'cid', true, 2, 0, 0, '', '1', 't'),
                        (3, 'ann', true, 2, 0, 0, '', '1', 't'), (3, 'bob', true, 2, 0, 0, '', '1', 't'),
                        (4, 'bob', true, 1, 0, 0, '', '1', 't'), (4, 'cid', false, 0, 0, 0, '', '1', 't'),
                        (5, 'ann', true, 1, 0, 0, '', '1', 't');",
            )
            .expect("rows");
        (dir, store)
    }

    #[test]
    fn the_glance_equals_the_report() {
        let (_dir, store) = store();
        let report = build(&store, &AgreementOptions::default()).expect("report");
        let glance = at_a_glance(&store).expect("glance");
        assert_eq!(glance.len(), GLANCE_TASKS.len());
        for (g, task) in glance.iter().zip(GLANCE_TASKS) {
            let o = &report
                .tasks
                .iter()
                .find(|t| t.task == task)
                .expect("task")
                .overall;
            assert_eq!(g.task, task.name());
            assert_eq!(g.images, o.images_multiply_rated);
            // Images come in another order than in the report: sums may differ in the
            // last bits.
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-12,
                (a, b) => a == b,
            };
            assert!(close(
                g.percent_agreement,
                o.percent_agreement_pairwise.value
            ));
            assert!(close(g.fleiss_kappa, o.fleiss_kappa.value));
            assert_eq!(g.fleiss_images, o.fleiss_images);
            assert!(close(g.krippendorff_alpha, o.krippendorff_alpha.value));
        }
        // usable: images 1-4 have two or more labels, 1 and 2 from all three raters.
        assert_eq!((glance[0].images, glance[0].fleiss_images), (4, 2));
        assert!(glance[0].fleiss_kappa.is_some() && glance[0].krippendorff_alpha.is_some());
        // quality counts usable images only: 1 (three labels) and 3 (two).
        assert_eq!((glance[1].images, glance[1].fleiss_images), (2, 1));
    }

    /// Ratings with what the benchmark store lacks: 15 raters (two blocks of packed
    /// codes), several saves per image and rater, undos (all of zed's ratings withdrawn),
    /// ratings in force without a usable answer, quality-only ratings, three sequences,
    /// manufacturers and field strengths of every form the scanner rule handles.
    const EDGE_RATINGS: &str = "
        INSERT INTO images (path, root, rel_path, status, suffix, file_size, mtime_ns,
                            manufacturer, field_strength)
        SELECT 'p' || i, 'r', 'p' || i, 'ok', ['FLAIR', 'T1w', 'T2w'][1 + (hash(i, 's') % 3)::BIGINT],
               0, 0, ['Siemens Healthineers', 'GE MEDICAL SYSTEMS', 'philips', '', NULL,
                      '  siemens  '][1 + (hash(i, 'm') % 6)::BIGINT],
               [1.5, 3.0, 15000.0, NULL][1 + (hash(i, 'f') % 4)::BIGINT]
        FROM range(400) t(i);
        CREATE TEMP TABLE names AS
        SELECT 'r' || lpad(i::VARCHAR, 2, '0') AS name FROM range(13) t(i)
        UNION ALL SELECT 'Amy';
        INSERT INTO ratings (image_id, rater, usable, motion, contrast, noise, gado, quality,
                             protocol_version, source)
        SELECT i.image_id, n.name,
               CASE WHEN hash(i.image_id, n.name, s.k, 'un') % 17 = 0 THEN NULL
                    ELSE hash(i.image_id, n.name, s.k, 'u') % 4 <> 0 END,
               (hash(i.image_id, n.name, s.k, 'm') % 3)::TINYINT,
               CASE WHEN hash(i.image_id, n.name, s.k, 'cn') % 9 <> 0
                    THEN (hash(i.image_id, n.name, s.k, 'c') % 3)::TINYINT END,
               (hash(i.image_id, n.name, s.k, 'n') % 3)::TINYINT,
               CASE WHEN hash(i.image_id, n.name, s.k, 'gn') % 5 <> 0
                    THEN hash(i.image_id, n.name, s.k, 'g') % 2 = 0 END,
               CASE WHEN hash(i.image_id, n.name, s.k, 'q') % 7 = 0
                    THEN ['good', 'medium', 'bad'][1 + (hash(i.image_id, n.name, s.k) % 3)::BIGINT] END,
               '1', 't'
        FROM images i CROSS JOIN names n CROSS JOIN range(3) s(k)
        WHERE hash(i.image_id, n.name, 'keep') % 3 = 0
          AND (s.k = 0 OR hash(i.image_id, n.name, s.k, 'again') % 4 = 0);
        INSERT INTO ratings (image_id, rater, usable, quality, protocol_version, source)
        SELECT image_id, 'Amy', true, ['good', 'medium', 'bad'][1 + (hash(image_id, 'qo') % 3)::BIGINT],
               '1', 't'
        FROM images WHERE image_id % 11 = 0;
        INSERT INTO ratings (image_id, rater, usable, motion, contrast, noise, protocol_version, source)
        SELECT image_id, 'zed', true, 0, 0, 0, '1', 't' FROM images WHERE image_id % 13 = 0;
        INSERT INTO ratings (image_id, rater, undoes, protocol_version, source)
        SELECT image_id, rater, rating_id, '1', 't' FROM ratings WHERE rater = 'zed';
        INSERT INTO ratings (image_id, rater, undoes, protocol_version, source)
        SELECT image_id, rater, max(rating_id), '1', 't'
        FROM ratings
        WHERE undoes IS NULL AND rater <> 'zed' AND hash(image_id, rater, 'undo') % 9 = 0
        GROUP BY ALL;";

    /// (image, rater, labels, scanner) of every label in force.
    type LabelFacts =
        std::collections::BTreeSet<(i64, String, [Option<String>; 3], Option<String>)>;

    #[test]
    fn the_packed_labels_equal_the_views_they_repeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        store.conn().execute_batch(EDGE_RATINGS).expect("rows");
        let count = |sql: &str| -> i64 {
            store
                .conn()
                .query_row(sql, [], |r| r.get(0))
                .expect("count")
        };
        // The fixture has what it claims.
        assert!(
            count(
                "SELECT count(*) FROM (SELECT image_id, rater FROM ratings WHERE undoes IS NULL GROUP BY ALL HAVING count(*) > 1)"
            ) > 100
        );
        assert!(count("SELECT count(*) FROM ratings_latest WHERE usable IS NULL") > 10);
        assert!(count("SELECT count(DISTINCT scanner) FROM image_scanners") >= 6);
        for sequence in [None, Some("FLAIR"), Some("T1w"), Some("PD")] {
            let patterns = load(&store, sequence).expect("labels");
            let mut got = LabelFacts::new();
            for (image, &image_id) in patterns.images.iter().enumerate() {
                let scanner = patterns.image_scanner[image].map(|s| patterns.scanners[s].clone());
                for (rater, name) in patterns.raters.iter().enumerate() {
                    let labels = Task::ALL.map(|task| {
                        patterns
                            .label(image, rater, task)
                            .map(|c| task.categories()[c].to_string())
                    });
                    if labels.iter().any(Option::is_some) {
                        got.insert((image_id, name.clone(), labels, scanner.clone()));
                    }
                }
            }
            let mut stmt = store
                .conn()
                .prepare(
                    "SELECT l.image_id, l.rater, l.usable_label, l.quality_label, l.gado_label, s.scanner
                     FROM rater_labels l JOIN images i USING (image_id) JOIN image_scanners s USING (image_id)
                     WHERE $1::VARCHAR IS NULL OR i.suffix = $1",
                )
                .expect("query");
            let want: LabelFacts = stmt
                .query_map(duckdb::params![sequence], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        [r.get(2)?, r.get(3)?, r.get(4)?],
                        r.get(5)?,
                    ))
                })
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert_eq!(got.len(), want.len(), "{sequence:?}");
            assert!(
                got == want,
                "{sequence:?}: the packed labels differ from the views"
            );
            // Exactly the raters with a label in force, by name; zed's were all undone.
            let raters: std::collections::BTreeSet<&String> = want.iter().map(|w| &w.1).collect();
            assert_eq!(
                patterns.raters.iter().collect::<Vec<_>>(),
                raters.into_iter().collect::<Vec<_>>()
            );
            assert!(!patterns.raters.iter().any(|r| r == "zed"));
            assert_eq!(sequence == Some("PD"), want.is_empty());
        }
    }

    #[test]
    fn a_coefficient_interval_is_clipped_to_its_range_with_n_beside_it() {
        // Gwet's AC1 of two images once reported [-4.940, 1.000].
        let few = Value::coefficient(0.2, Some((-4.94, 1.7)), Some(0.4), 2);
        assert_eq!(few.ci95, Some([-1.0, 1.0]));
        assert_eq!(few.n, Some(2));
        assert!(few.note.as_deref().is_some_and(|n| n.contains("too few")));
        assert_eq!(
            few.text(),
            "0.200 [-1.000, 1.000], n = 2 (only 2 images: too few for the interval to mean much)"
        );
        let enough = Value::coefficient(0.6, Some((0.4, 0.8)), Some(0.1), 40);
        assert_eq!(enough.ci95, Some([0.4, 0.8]));
        assert_eq!(enough.note, None);
        assert_eq!(enough.text(), "0.600 [0.400, 0.800], n = 40");
        // No interval: nothing is invented, n is still given.
        let bare = Value::coefficient(0.5, None, None, 1);
        assert_eq!((bare.ci95, bare.n), (None, Some(1)));
    }

    #[test]
    fn kappa_and_ac1_intervals_in_the_report_stay_in_range() {
        let (_dir, store) = store();
        let report = build(&store, &AgreementOptions::default()).expect("report");
        let mut checked = 0;
        for t in &report.tasks {
            let coefficients = t
                .pairs
                .iter()
                .map(|p| (&p.kappa, p.n))
                .chain([(&t.overall.gwet_ac1, t.overall.images)]);
            for (v, images) in coefficients {
                if let Some([lo, hi]) = v.ci95 {
                    assert!((-1.0..=hi).contains(&lo) && hi <= 1.0, "{}", v.text());
                    checked += 1;
                }
                if v.value.is_some() {
                    // Five images in all: every coefficient is on too few for its interval.
                    assert!(v.n.is_some_and(|n| n <= images), "{}", v.text());
                    assert!(v.note.is_some(), "{}", v.text());
                }
            }
        }
        assert!(checked > 0, "no interval was checked");
        let json = serde_json::to_value(&report).expect("json");
        let ac1 = &json["tasks"][0]["overall"]["gwet_ac1"];
        assert!(
            ac1["n"].as_u64().is_some() && ac1["note"].is_string(),
            "{ac1}"
        );
        let markdown = document(&report).markdown();
        assert!(markdown.contains(", n = "), "{markdown}");
        assert!(markdown.contains("too few for the interval"), "{markdown}");
    }

    #[test]
    fn the_glance_of_an_empty_store_has_no_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        for g in at_a_glance(&store).expect("glance") {
            assert_eq!(g.images, 0);
            assert_eq!(g.percent_agreement, None);
        }
    }
}
