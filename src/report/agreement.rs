//! The inter-rater agreement report: for each task, every pair of raters with shared
//! images and all raters together, overall and per scanner.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{Figure, ReportError, Value};
use crate::metrics::{
    ConfusionMatrix, ContingencyTable, Level, Ratings, SubjectCounts, Weighting, cohen_kappa,
    fleiss_kappa, gwet_ac1, krippendorff_alpha, pairwise_agreement, percent_agreement,
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

struct LabelRow {
    image_id: i64,
    rater: String,
    labels: [Option<String>; 3],
    scanner: Option<String>,
}

fn load(store: &Store, opts: &AgreementOptions) -> Result<Vec<LabelRow>, ReportError> {
    let mut stmt = store
        .conn()
        .prepare(include_str!("../../sql/store/rater_labels_for_report.sql"))
        .map_err(|e| store.err(e))?;
    let rows = stmt
        .query_map(duckdb::params![opts.sequence], |r| {
            Ok(LabelRow {
                image_id: r.get(0)?,
                rater: r.get(1)?,
                labels: [r.get(2)?, r.get(3)?, r.get(4)?],
                scanner: r.get(5)?,
            })
        })
        .map_err(|e| store.err(e))?;
    let mut out = Vec::new();
    for row in rows {
        let row = row.map_err(|e| store.err(e))?;
        if opts.raters.is_empty() || opts.raters.contains(&row.rater) {
            out.push(row);
        }
    }
    Ok(out)
}

/// Builds the agreement report from the ratings in force.
pub fn build(store: &Store, opts: &AgreementOptions) -> Result<AgreementReport, ReportError> {
    let rows = load(store, opts)?;
    let mut raters: Vec<String> = rows
        .iter()
        .map(|r| r.rater.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
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
    let mut tasks = Vec::new();
    let mut figures = Vec::new();
    for (t, task) in Task::ALL.iter().enumerate() {
        let categories = task.categories();
        let index: HashMap<&str, usize> = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i))
            .collect();
        // image -> rater -> category
        let mut by_image: BTreeMap<i64, BTreeMap<usize, usize>> = BTreeMap::new();
        let mut scanner_of: HashMap<i64, String> = HashMap::new();
        for row in &rows {
            let Some(label) = row.labels[t].as_deref() else {
                continue;
            };
            let (Some(&c), Some(r)) = (
                index.get(label),
                raters.iter().position(|x| *x == row.rater),
            ) else {
                continue;
            };
            by_image.entry(row.image_id).or_default().insert(r, c);
            if let Some(s) = &row.scanner {
                scanner_of.insert(row.image_id, s.clone());
            }
        }
        let image_ids: Vec<i64> = by_image.keys().copied().collect();
        let matrix = |ids: &[i64]| -> Result<Ratings, ReportError> {
            let mut cells = Vec::with_capacity(ids.len() * raters.len());
            for id in ids {
                let given = &by_image[id];
                cells.extend((0..raters.len()).map(|r| given.get(&r).copied()));
            }
            Ratings::new(cells, raters.len().max(1), categories.len())
                .map_err(|e| ReportError::Input(e.to_string()))
        };
        let all = matrix(&image_ids)?;
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
        let mut scanners: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for id in &image_ids {
            if let Some(s) = scanner_of.get(id) {
                scanners.entry(s.clone()).or_default().push(*id);
            }
        }
        let mut by_scanner = Vec::new();
        if scanners.len() > 1 {
            for (name, ids) in scanners {
                by_scanner.push((name, group(&matrix(&ids)?, *task)));
            }
        }
        tasks.push(TaskAgreement {
            task: *task,
            categories: categories.iter().map(|c| c.to_string()).collect(),
            kappa_weighting: weighting_name(task.weighting()),
            overall,
            pairs,
            by_scanner,
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
