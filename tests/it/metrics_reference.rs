//! Reproduces every expected value of tests/data/agreement_vectors.json (provenance in
//! tests/data/README.md), or asserts the documented undefined behaviour, or checks a
//! documented library output bug through a related value, or names the key in an
//! explicit allow-list.

use std::path::Path;

use cdwqc::metrics::{
    AgreementWeights, ConfusionMatrix, ContingencyTable, Level, MetricError, Ratings,
    SubjectCounts, TableCoefficient, Undefined, Weighting, ZeroDivision, all_raters_agree,
    brennan_prediger, cohen_kappa, conger_kappa, fleiss_kappa, fleiss_kappa_generalized, gwet_ac2,
    krippendorff_alpha, krippendorff_alpha_inference, krippendorff_observed_agreement,
    pairwise_agreement, percent_agreement, randolph_kappa, roc_auc, roc_auc_one_vs_one_macro,
    roc_auc_one_vs_rest, scott_pi, table_coefficient,
};
use serde_json::Value;

/// Key families deliberately not implemented, with the reason.
const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    // The API pairs each score column with its class index, so an unsorted
    // label list cannot mis-assign score columns: nothing to reject.
    ("pitfall_unsorted_labels.", "sklearn label-order error"),
    // Category orders are always declared, so string data without an ordered
    // domain cannot be expressed.
    (
        "krippendorff_alpha.strings_ordinal_without_domain",
        "unrepresentable input",
    ),
];

const PREFIXES: &[&str] = &[
    "observed_levels.",
    "declared_levels_1to6.",
    "declared.",
    "observed.",
    "sklearn_default_labels.",
    "pitfall_alphabetical_labels.",
    "irrCAC_q1.",
    "irrCAC_q2.",
    "as_classification(y_true=rater1,y_pred=rater2).",
    "pair_r1_r2.",
    "pair_r1_r3.",
    "pair_r2_r3.",
];

type Computed = Result<Vec<f64>, MetricError>;

enum Outcome {
    Checked(Computed),
    AllowListed,
    /// The reference value is a known output bug of the library; the computed value is
    /// compared with the key `.coefficient` of the same estimator instead.
    ReferenceQuirk(Result<f64, MetricError>),
}

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/agreement_vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reference vectors {} missing: {e}", path.display()));
    serde_json::from_str(&text).expect("reference vectors are valid JSON")
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn index_of(categories: &[Value], value: &Value) -> Option<usize> {
    categories.iter().position(|c| same_value(c, value))
}

/// Parses a Python list literal that follows `marker` in a call string.
fn list_after(call: &str, marker: &str) -> Option<Vec<Value>> {
    let start = call.find(marker)? + marker.len();
    let rest = call[start..].strip_prefix('[')?;
    let inner = &rest[..rest.find(']')?];
    Some(
        inner
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                if let Some(text) = item.strip_prefix('\'') {
                    Value::from(text.trim_end_matches('\''))
                } else {
                    Value::from(item.parse::<f64>().expect("numeric list item"))
                }
            })
            .collect(),
    )
}

/// Parses the matrix literal of `cohens_kappa([[..], [..]])`.
fn matrix_after(call: &str, marker: &str) -> Option<Vec<Vec<u64>>> {
    let start = call.find(marker)? + marker.len();
    let end = start + call[start..].find("]]")? + 2;
    let parsed: Value = serde_json::from_str(&call[start..end]).ok()?;
    parsed
        .as_array()?
        .iter()
        .map(|row| row.as_array()?.iter().map(Value::as_u64).collect())
        .collect()
}

fn sorted_unique(values: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in values.iter().filter(|v| !v.is_null()) {
        if index_of(&out, v).is_none() {
            out.push(v.clone());
        }
    }
    out.sort_by(|a, b| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => a.as_str().cmp(&b.as_str()),
    });
    out
}

fn array(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

struct Case<'a> {
    input: &'a Value,
}

impl Case<'_> {
    fn categories(&self, prefix: &str) -> Vec<Value> {
        let field = match prefix {
            "observed_levels." | "observed." => "categories_observed",
            "declared_levels_1to6." | "declared." => "categories_declared",
            "irrCAC_q1." => "categories_declared_1",
            "irrCAC_q2." => "categories_declared_2",
            _ if self.input.get("categories").is_some() => "categories",
            _ if self.input.get("labels").is_some() => "labels",
            // No declared list: the categories are the values seen (sklearn labels=None).
            _ => return sorted_unique(&self.rows("ratings").concat()),
        };
        array(&self.input[field])
    }

    fn rows(&self, field: &str) -> Vec<Vec<Value>> {
        array(&self.input[field]).iter().map(array).collect()
    }

    /// The two rating vectors compared by two-rater statistics.
    fn two_raters(&self, prefix: &str) -> (Vec<Value>, Vec<Value>) {
        if let Some(pair) = prefix.strip_prefix("pair_r") {
            let a = (pair.as_bytes()[0] - b'1') as usize;
            let b = (pair.as_bytes()[3] - b'1') as usize;
            let rows = self.rows("ratings");
            return (
                rows.iter().map(|r| r[a].clone()).collect(),
                rows.iter().map(|r| r[b].clone()).collect(),
            );
        }
        for (first, second) in [("y1", "y2"), ("y_true", "y_pred")] {
            if self.input.get(first).is_some() {
                return (array(&self.input[first]), array(&self.input[second]));
            }
        }
        let rows = self.rows("ratings");
        (
            rows.iter().map(|r| r[0].clone()).collect(),
            rows.iter().map(|r| r[1].clone()).collect(),
        )
    }

    fn ratings_matrix(&self, field: &str, categories: &[Value]) -> Ratings {
        let rows: Vec<Vec<Option<usize>>> = self
            .rows(field)
            .iter()
            .map(|row| row.iter().map(|v| index_of(categories, v)).collect())
            .collect();
        Ratings::from_rows(&rows, categories.len()).expect("ratings fit the categories")
    }
}

fn pair_table(first: &[Value], second: &[Value], labels: &[Value]) -> ContingencyTable {
    let a: Vec<Option<usize>> = first.iter().map(|v| index_of(labels, v)).collect();
    let b: Vec<Option<usize>> = second.iter().map(|v| index_of(labels, v)).collect();
    ContingencyTable::from_pairs(&a, &b, labels.len()).expect("pairs fit the labels")
}

fn weighting_from(call: &str) -> Weighting {
    if call.contains("'linear'") {
        Weighting::Linear
    } else if call.contains("'quadratic'") {
        Weighting::Quadratic
    } else {
        Weighting::Unweighted
    }
}

fn scalar(value: Result<f64, MetricError>) -> Computed {
    value.map(|v| vec![v])
}

fn compute(case: &Case<'_>, key: &str, call: &str) -> Option<Outcome> {
    if NOT_IMPLEMENTED
        .iter()
        .any(|(family, _)| key.starts_with(family) || key.contains(&format!(".{family}")))
    {
        return Some(Outcome::AllowListed);
    }
    let prefix = PREFIXES
        .iter()
        .copied()
        .find(|p| key.starts_with(p))
        .unwrap_or("");
    let metric = &key[prefix.len()..];
    let categories = case.categories(prefix);
    let input = case.input;
    let computed: Computed = if metric.starts_with("statsmodels_cohens_kappa.") {
        let table = if let Some(literal) = matrix_after(call, "cohens_kappa(") {
            ContingencyTable::from_rows(&literal).expect("square literal")
        } else if prefix.is_empty() && input.get("table").is_some() {
            let rows: Vec<Vec<u64>> = case
                .rows("table")
                .iter()
                .map(|r| r.iter().map(|v| v.as_u64().expect("count")).collect())
                .collect();
            ContingencyTable::from_rows(&rows).expect("square table")
        } else {
            let (a, b) = case.two_raters(prefix);
            pair_table(&a, &b, &categories)
        };
        let field = metric.rsplit('.').next().expect("field");
        let weighting = if call.contains("wt='linear'") {
            Weighting::Linear
        } else if call.contains("wt='quadratic'") {
            Weighting::Quadratic
        } else {
            Weighting::Unweighted
        };
        cohen_kappa(&table, weighting).and_then(|k| {
            let value = match field {
                "kappa" => Ok(k.kappa),
                "var_kappa" => Ok(k.var_kappa),
                "std_kappa" => Ok(k.std_kappa),
                "kappa_low" => Ok(k.ci95.0),
                "kappa_upp" => Ok(k.ci95.1),
                "var_kappa0" => Ok(k.var_kappa0),
                "std_kappa0" => Ok(k.std_kappa0),
                "z_value" => k.z_value,
                "pvalue_one_sided" => k.pvalue_one_sided,
                "pvalue_two_sided" => k.pvalue_two_sided,
                "kappa_max" => Ok(k.kappa_max),
                other => panic!("unknown statsmodels field {other}"),
            };
            value.map(|v| vec![v])
        })
    } else if metric.starts_with("cohen_kappa") {
        let (a, b) = case.two_raters(prefix);
        let labels = list_after(call, "labels=").unwrap_or_else(|| {
            let mut all = a.clone();
            all.extend(b.iter().cloned());
            sorted_unique(&all)
        });
        scalar(cohen_kappa(&pair_table(&a, &b, &labels), weighting_from(call)).map(|k| k.kappa))
    } else if metric == "percent_agreement" {
        let (a, b) = case.two_raters(prefix);
        scalar(percent_agreement(&pair_table(&a, &b, &categories)))
    } else if metric == "scott_pi" {
        let (a, b) = case.two_raters(prefix);
        scalar(scott_pi(&pair_table(&a, &b, &categories)))
    } else if metric.starts_with("percent_agreement.") {
        let counts = case.ratings_matrix("ratings", &categories).subject_counts();
        scalar(if metric.ends_with("pairwise") {
            pairwise_agreement(&counts)
        } else {
            all_raters_agree(&counts)
        })
    } else if metric.starts_with("fleiss_") && raw_coefficient_key(metric).is_none() {
        let (ratings_field, categories) = if metric.contains("counts_1cat") {
            ("ratings_3raters", array(&input["categories_declared_1"]))
        } else if metric.contains("counts_2cats") {
            ("ratings_3raters", array(&input["categories_declared_2"]))
        } else if metric.contains("observed_categories_only") {
            ("ratings", array(&input["categories_observed"]))
        } else {
            ("ratings", categories)
        };
        let mut ratings = case.ratings_matrix(ratings_field, &categories);
        if metric.contains("complete_subjects_only") {
            ratings = ratings.complete_subjects();
        }
        let counts = ratings.subject_counts();
        let kappa = if metric.ends_with("randolph") || metric.contains("randolph_") {
            randolph_kappa(&counts)
        } else {
            fleiss_kappa(&counts)
        };
        scalar(kappa.map(|k| match metric {
            "fleiss_P_bar" => k.p_bar,
            "fleiss_P_e" => k.p_e,
            _ => k.kappa,
        }))
    } else if let Some(rest) = metric.strip_prefix("krippendorff_alpha.") {
        return Some(Outcome::Checked(krippendorff(
            case,
            rest,
            call,
            &categories,
        )));
    } else if let Some(rest) = metric.strip_prefix("irrCAC_table.") {
        return Some(table_estimator(case, rest));
    } else if let Some((family, field)) = raw_coefficient_key(metric) {
        let declared = list_after(call, "categories=").expect("irrCAC call declares categories");
        let ratings = case.ratings_matrix("ratings", &declared);
        let counts = ratings.subject_counts();
        // irrCAC weights use numeric category values, and ranks 1..q for strings.
        let values: Vec<f64> = declared
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_f64().unwrap_or(i as f64 + 1.0))
            .collect();
        let weights = if call.contains("weights='linear'") {
            AgreementWeights::Linear(&values)
        } else if call.contains("weights='quadratic'") {
            AgreementWeights::Quadratic(&values)
        } else if call.contains("weights='bipolar'") {
            AgreementWeights::Bipolar(&values)
        } else {
            AgreementWeights::Identity
        };
        let result = match family {
            "gwet" => gwet_ac2(&counts, weights),
            "fleiss" => fleiss_kappa_generalized(&counts, weights),
            "krippendorff" => krippendorff_alpha_inference(&counts, weights),
            "conger" => conger_kappa(&ratings, weights),
            _ => brennan_prediger(&counts, weights),
        };
        if field == "pa" && (weights == AgreementWeights::Identity || family == "krippendorff") {
            // p_a is defined even where the coefficient is not (chance agreement 1): with
            // identity weights it is the pairwise percent agreement, and Krippendorff's has
            // its own function.
            let observed = if family == "krippendorff" {
                krippendorff_observed_agreement(&counts, weights)
            } else {
                pairwise_agreement(&counts)
            };
            if let (Ok(coefficient), Ok(pa)) = (&result, &observed) {
                assert!(
                    (coefficient.pa - pa).abs() <= 1e-15,
                    "pa {} vs separately computed {pa}",
                    coefficient.pa
                );
            }
            scalar(observed)
        } else {
            result.and_then(|g| match field {
                "coefficient" => Ok(vec![g.coefficient]),
                "pa" => Ok(vec![g.pa]),
                "pe" => Ok(vec![g.pe]),
                "se" => g.se.map(|s| vec![s]),
                "ci95" => g.ci95.map(|(l, u)| vec![l, u]),
                other => panic!("unknown irrCAC field {other}"),
            })
        }
    } else {
        return classification(case, prefix, metric, call);
    };
    Some(Outcome::Checked(computed))
}

/// `(family, field)` of the irrCAC raw-data keys implemented here.
fn raw_coefficient_key(metric: &str) -> Option<(&'static str, &str)> {
    const FAMILIES: &[(&str, &str)] = &[
        ("gwet_AC1.", "gwet"),
        ("gwet_AC2_linear.", "gwet"),
        ("gwet_AC2_quadratic.", "gwet"),
        ("gwet_bipolar.", "gwet"),
        ("brennan_prediger_identity.", "bp"),
        ("brennan_prediger_linear.", "bp"),
        ("brennan_prediger_quadratic.", "bp"),
        ("brennan_prediger_bipolar.", "bp"),
        ("fleiss_gwet_generalized_identity.", "fleiss"),
        ("fleiss_gwet_generalized_linear.", "fleiss"),
        ("fleiss_gwet_generalized_quadratic.", "fleiss"),
        ("fleiss_gwet_generalized_bipolar.", "fleiss"),
        ("krippendorff_alpha_irrCAC_identity.", "krippendorff"),
        ("krippendorff_alpha_irrCAC_linear.", "krippendorff"),
        ("krippendorff_alpha_irrCAC_quadratic.", "krippendorff"),
        ("krippendorff_alpha_irrCAC_bipolar.", "krippendorff"),
        ("conger_kappa_identity.", "conger"),
        ("conger_kappa_linear.", "conger"),
        ("conger_kappa_quadratic.", "conger"),
        ("conger_kappa_bipolar.", "conger"),
    ];
    FAMILIES
        .iter()
        .find_map(|(prefix, family)| metric.strip_prefix(prefix).map(|field| (*family, field)))
}

/// `irrCAC_table.<weights>.<coefficient>.<field>`: irrCAC `table.CAC` on the case's table,
/// whose weights use the ranks 1..q whatever the categories are.
fn table_estimator(case: &Case<'_>, rest: &str) -> Outcome {
    let mut parts = rest.split('.');
    let (weights_name, name, field) = (
        parts.next().expect("weights"),
        parts.next().expect("coefficient"),
        parts.next().expect("field"),
    );
    let rows: Vec<Vec<u64>> = case
        .rows("table")
        .iter()
        .map(|r| r.iter().map(|v| v.as_u64().expect("count")).collect())
        .collect();
    let table = ContingencyTable::from_rows(&rows).expect("square table");
    let ranks: Vec<f64> = (1..=rows.len()).map(|rank| rank as f64).collect();
    let weights = match weights_name {
        "identity" => AgreementWeights::Identity,
        "linear" => AgreementWeights::Linear(&ranks),
        "quadratic" => AgreementWeights::Quadratic(&ranks),
        "bipolar" => AgreementWeights::Bipolar(&ranks),
        other => panic!("unknown irrCAC weights {other}"),
    };
    let coefficient = match name {
        "pa2" => TableCoefficient::PercentAgreement,
        "bp" => TableCoefficient::BrennanPrediger,
        "cohen" => TableCoefficient::Cohen,
        "scott" => TableCoefficient::Scott,
        "gwet" => TableCoefficient::Gwet,
        "krippendorff" => TableCoefficient::Krippendorff,
        other => panic!("unknown irrCAC table coefficient {other}"),
    };
    let result = table_coefficient(&table, weights, coefficient);
    if (name, field) == ("scott", "pe") {
        // irrCAC's table.CAC.scott() leaves pe = 0 in its output (the JSON notes it); the
        // real chance agreement is checked through the coefficient it produces.
        return Outcome::ReferenceQuirk(result.map(|g| (g.pa - g.pe) / (1.0 - g.pe)));
    }
    Outcome::Checked(result.and_then(|g| match field {
        "coefficient" => Ok(vec![g.coefficient]),
        "pa" => Ok(vec![g.pa]),
        "pe" => Ok(vec![g.pe]),
        "se" => g.se.map(|s| vec![s]),
        "ci95" => g.ci95.map(|(l, u)| vec![l, u]),
        other => panic!("unknown irrCAC field {other}"),
    }))
}

fn krippendorff(case: &Case<'_>, rest: &str, call: &str, categories: &[Value]) -> Computed {
    let level_name = rest.split('.').next().expect("level");
    let edge = rest.split('.').nth(1);
    let ratings_3 = |q: usize| {
        let rows: Vec<Vec<Option<usize>>> = case
            .rows("ratings_3raters")
            .iter()
            .map(|row| row.iter().map(|_| Some(0)).collect())
            .collect();
        Ratings::from_rows(&rows, q).expect("constant ratings")
    };
    let (counts, domain): (SubjectCounts, Vec<f64>) = match (level_name, edge) {
        (_, Some("domain_inferred")) => (ratings_3(1).subject_counts(), vec![0.0]),
        (_, Some("domain_01")) => (ratings_3(2).subject_counts(), vec![0.0, 1.0]),
        ("nominal", Some("no_pairable_unit")) => {
            // [[1, nan], [nan, 2]] as raters x units: two units with one rating each.
            let ratings = Ratings::new(vec![Some(0), None, None, Some(1)], 2, 2).expect("shape");
            (ratings.subject_counts(), vec![1.0, 2.0])
        }
        ("out_of_domain", None) => {
            // value 3 outside the domain [1, 2]: index 2 of 2 declared categories.
            return Ratings::new(
                vec![Some(0), Some(0), Some(1), Some(1), Some(2), None],
                2,
                2,
            )
            .map(|_| vec![]);
        }
        _ => {
            let domain: Vec<f64> = list_after(call, "value_domain=")
                .expect("value_domain in call")
                .iter()
                .map(|v| v.as_f64().expect("numeric domain"))
                .collect();
            let rows: Vec<Vec<Option<usize>>> = case
                .rows("ratings")
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|v| {
                            let value = v
                                .as_f64()
                                .or_else(|| index_of(categories, v).map(|i| i as f64))?;
                            domain.iter().position(|d| *d == value)
                        })
                        .collect()
                })
                .collect();
            let ratings = Ratings::from_rows(&rows, domain.len()).expect("ratings in domain");
            (ratings.subject_counts(), domain)
        }
    };
    let level = match level_name {
        "nominal" => Level::Nominal,
        "ordinal" => Level::Ordinal,
        "interval" => Level::Interval(&domain),
        "ratio" => Level::Ratio(&domain),
        other => panic!("unknown level {other}"),
    };
    scalar(krippendorff_alpha(&counts, level))
}

fn classification(case: &Case<'_>, prefix: &str, metric: &str, call: &str) -> Option<Outcome> {
    let input = case.input;
    let labels = case.categories(prefix);
    let (truth, predicted) = case.two_raters(prefix);
    let to_index = |values: &[Value]| -> Vec<usize> {
        values
            .iter()
            .map(|v| index_of(&labels, v).expect("known label"))
            .collect()
    };
    let (y_true, y_pred) = (to_index(&truth), to_index(&predicted));
    let matrix = ConfusionMatrix::from_indices(&y_true, &y_pred, labels.len()).expect("labels");
    let per_class = matrix.per_class();
    // scikit-learn's default zero_division counts an undefined ratio as 0.
    let sklearn_default = |values: Vec<Result<f64, MetricError>>| -> Computed {
        Ok(values.into_iter().map(|v| v.unwrap_or(0.0)).collect())
    };
    let scores = || -> (Vec<f64>, Vec<Value>) {
        let columns = array(&input["y_score_columns"]);
        let flat = case
            .rows("y_score")
            .iter()
            .flatten()
            .map(|v| v.as_f64().expect("score"))
            .collect();
        (flat, columns)
    };
    let score_classes = |columns: &[Value]| -> Vec<usize> {
        truth
            .iter()
            .map(|v| index_of(columns, v).expect("scored class"))
            .collect()
    };
    let computed: Computed = match metric {
        "confusion_matrix" => Ok(matrix.rows().concat().iter().map(|&c| c as f64).collect()),
        "accuracy" => scalar(matrix.accuracy()),
        "balanced_accuracy" => scalar(matrix.balanced_accuracy()),
        "balanced_accuracy_adjusted" => scalar(matrix.balanced_accuracy_adjusted()),
        "f1_macro" => scalar(matrix.f1_macro(ZeroDivision::Zero)),
        "f1_macro_zero_division_nan" => scalar(matrix.f1_macro(ZeroDivision::Exclude)),
        "f1_macro_labels_abc" => {
            let subset: Vec<usize> = list_after(call, "labels=")
                .expect("labels in call")
                .iter()
                .map(|v| index_of(&labels, v).expect("label"))
                .collect();
            scalar(matrix.f1_macro_over(&subset, ZeroDivision::Zero))
        }
        "f1_per_class" => sklearn_default(per_class.iter().map(|m| m.f1.clone()).collect()),
        "precision_per_class" => {
            sklearn_default(per_class.iter().map(|m| m.precision.clone()).collect())
        }
        "sensitivity_per_class" => {
            sklearn_default(per_class.iter().map(|m| m.sensitivity.clone()).collect())
        }
        "specificity_per_class" => {
            sklearn_default(per_class.iter().map(|m| m.specificity.clone()).collect())
        }
        "f1_binary_pos1" => {
            let positive = index_of(&labels, &input["positive_label"]).expect("positive label");
            scalar(per_class[positive].f1.clone())
        }
        "mcc" => scalar(matrix.mcc()),
        "roc_auc" => {
            let positive = index_of(&labels, &input["positive_label"]).expect("positive label");
            let is_positive: Vec<bool> = y_true.iter().map(|&t| t == positive).collect();
            let flat: Vec<f64> = array(&input["y_score"])
                .iter()
                .map(|v| v.as_f64().expect("score"))
                .collect();
            scalar(roc_auc(&is_positive, &flat))
        }
        "roc_auc_ovr_macro" | "roc_auc_ovr_weighted" | "roc_auc_ovr_per_class" => {
            let (flat, columns) = scores();
            let classes = score_classes(&columns);
            roc_auc_one_vs_rest(&classes, &flat, columns.len()).map(|auc| match metric {
                "roc_auc_ovr_macro" => vec![auc.macro_average],
                "roc_auc_ovr_weighted" => vec![auc.weighted_average],
                _ => list_after(call, "labels=")
                    .expect("labels in call")
                    .iter()
                    .map(|label| auc.per_class[index_of(&columns, label).expect("label")])
                    .collect(),
            })
        }
        "roc_auc_ovo_macro" => {
            let (flat, columns) = scores();
            scalar(roc_auc_one_vs_one_macro(
                &score_classes(&columns),
                &flat,
                columns.len(),
            ))
        }
        _ => return None,
    };
    Some(Outcome::Checked(computed))
}

/// The error the project answers for a reference entry the libraries call undefined or
/// an error: the same problem whatever each library made of it (NaN, an exception, a
/// hard-coded 1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
enum ExpectedError {
    Undefined(Undefined),
    InvalidInput,
}

impl ExpectedError {
    fn matches(self, error: &MetricError) -> bool {
        match (self, error) {
            (ExpectedError::Undefined(want), MetricError::Undefined(got)) => want == *got,
            (ExpectedError::InvalidInput, MetricError::InvalidInput { .. }) => true,
            _ => false,
        }
    }
}

/// What the reference's own words (the library's error, the undefined or fragile reason)
/// say went wrong, as the project's error.
fn expected_error(key: &str, entry: &Value) -> Option<ExpectedError> {
    let text = |field: &str| entry[field].as_str().unwrap_or("");
    let error = text("error");
    let reason = format!("{} {}", text("undefined_reason"), text("fragile_reason"));
    let undefined = |reason| Some(ExpectedError::Undefined(reason));
    if error.starts_with("AssertionError") && key.contains("fleiss_all_subjects") {
        // statsmodels asserts every subject carries the same number of ratings.
        return undefined(Undefined::UnequalRatingsPerSubject);
    }
    if error.contains("more than one value in the domain") {
        return undefined(Undefined::SingleValueDomain);
    }
    if error.contains("at least one unit with values assigned by at least two") {
        return undefined(Undefined::NoPairableUnit);
    }
    if error.contains("out-of-domain values") {
        return Some(ExpectedError::InvalidInput);
    }
    if key.starts_with("krippendorff_alpha.") && key.ends_with(".domain_01") {
        // One value used out of a two-value domain: no expected disagreement (0/0).
        return undefined(Undefined::NoExpectedDisagreement);
    }
    if key.starts_with("irrCAC_q1.gwet_") {
        // Gwet's chance agreement divides by q - 1: with one declared category it is 0/0
        // whatever the ratings, which cdwqc reports as the single-value domain it is.
        return undefined(Undefined::SingleValueDomain);
    }
    if reason.contains("chance agreement is exactly 1") || reason.contains("P_e = 1") {
        return undefined(Undefined::ChanceAgreementIsOne);
    }
    None
}

fn expected_numbers(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(expected_numbers).collect(),
        other => vec![other.as_f64().expect("numeric expected value")],
    }
}

#[test]
fn every_reference_value_is_reproduced_or_accounted_for() {
    let reference = reference();
    let cases = reference["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 32, "number of reference cases");
    let (mut checked, mut undefined, mut allow_listed, mut quirks) =
        (0usize, 0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for case_json in cases {
        let name = case_json["name"].as_str().expect("name");
        let case = Case {
            input: &case_json["input"],
        };
        for (key, entry) in case_json["expected"].as_object().expect("expected") {
            let call = entry["call"].as_str().unwrap_or("");
            let status = entry["status"].as_str().expect("status");
            let is_undefined = entry
                .get("undefined")
                .is_some_and(|u| u.as_bool() == Some(true))
                || status != "ok";
            let fragile = entry
                .get("fragile")
                .is_some_and(|f| f.as_bool() == Some(true));
            match compute(&case, key, call) {
                None => failures.push(format!("{name}: {key}: neither checked nor allow-listed")),
                Some(Outcome::AllowListed) => allow_listed += 1,
                Some(Outcome::ReferenceQuirk(result)) => {
                    let value = entry["value"].as_f64();
                    let coefficient_key =
                        format!("{}.coefficient", &key[..key.rfind('.').unwrap()]);
                    let coefficient = case_json["expected"][&coefficient_key]["value"].as_f64();
                    match (value, coefficient, result) {
                        (Some(0.0), Some(expected), Ok(actual))
                            if (actual - expected).abs()
                                <= 1e-12_f64.max(1e-9 * expected.abs()) =>
                        {
                            quirks += 1
                        }
                        other => failures.push(format!(
                            "{name}: {key}: reference quirk not as documented: {other:?}"
                        )),
                    }
                }
                Some(Outcome::Checked(result)) => {
                    if is_undefined {
                        let Some(want) = expected_error(key, entry) else {
                            failures.push(format!(
                                "{name}: {key}: no expected error kind for this {status} entry"
                            ));
                            continue;
                        };
                        match result {
                            Err(e) if want.matches(&e) => undefined += 1,
                            Err(e) => failures
                                .push(format!("{name}: {key}: expected {want:?}, got {e:?}")),
                            Ok(v) => failures.push(format!(
                                "{name}: {key}: expected {want:?} ({status}), got {v:?}"
                            )),
                        }
                        continue;
                    }
                    let expected = expected_numbers(&entry["value"]);
                    match result {
                        Err(e) => {
                            failures.push(format!("{name}: {key}: got {e}, expected {expected:?}"))
                        }
                        Ok(actual) if actual.len() != expected.len() => failures.push(format!(
                            "{name}: {key}: {} values, expected {}",
                            actual.len(),
                            expected.len()
                        )),
                        Ok(actual) => {
                            // irrCAC prints its interval bounds to 15 decimal places,
                            // coefficient ± t·se, but scipy's t quantile inside is off the
                            // exact one by up to 4.1e-9 relative (df 39; 1.3e-9 at df 49,
                            // 8e-13 at df 13: the t implied by each of the 281 intervals
                            // against the incomplete beta solved at 25 digits with mpmath),
                            // while cdwqc's is exact to round-off. So each bound is right to
                            // 1e-14 plus 4.1e-9 of the half-width (coefficient - lower bound:
                            // only the upper bound is capped at 1), and is compared to 1e-14
                            // plus 5e-9 of it.
                            let irrcac_interval = key.ends_with(".ci95");
                            let half_width = key
                                .strip_suffix(".ci95")
                                .and_then(|base| {
                                    case_json["expected"][format!("{base}.coefficient")]["value"]
                                        .as_f64()
                                })
                                .zip(expected.first())
                                .map_or(0.0, |(coefficient, low)| (coefficient - low).abs());
                            let close = actual.iter().zip(&expected).all(|(a, e)| {
                                let diff = (a - e).abs();
                                if fragile {
                                    diff <= 1e-9
                                } else if irrcac_interval {
                                    diff <= 1e-14 + 5e-9 * half_width
                                } else {
                                    diff <= 1e-12 || diff <= 1e-9 * e.abs()
                                }
                            });
                            if close {
                                checked += 1;
                            } else {
                                failures.push(format!(
                                    "{name}: {key}: got {actual:?}, expected {expected:?}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    println!(
        "reference keys: {checked} reproduced, {undefined} undefined as documented, \
         {quirks} library output bugs checked through the coefficient, {allow_listed} allow-listed"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        checked + undefined + quirks + allow_listed,
        2684,
        "every expected value is accounted for"
    );
}
