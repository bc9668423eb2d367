//! Classification metrics on category indices: confusion matrix, accuracy, balanced accuracy,
//! per-class sensitivity / specificity / precision / F1, macro F1, MCC, ROC curve and ROC AUC.

use super::undefined::{Estimate, MetricError, Undefined, ratio};

/// Confusion matrix, rows = true class, columns = predicted class, in the declared label order.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    counts: Vec<u64>,
    n_classes: usize,
}

/// One-vs-rest metrics of one class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMetrics {
    /// Number of samples of this class in the truth.
    pub support: u64,
    /// Recall `tp / (tp + fn)`.
    pub sensitivity: Estimate,
    /// `tn / (tn + fp)`.
    pub specificity: Estimate,
    /// `tp / (tp + fp)`.
    pub precision: Estimate,
    /// `2 tp / (2 tp + fp + fn)`.
    pub f1: Estimate,
}

/// What an undefined per-class F1 contributes to a macro average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroDivision {
    /// Counts as 0 (scikit-learn's default `zero_division="warn"`).
    Zero,
    /// Left out of the average (scikit-learn's `zero_division=np.nan`).
    Exclude,
}

impl ConfusionMatrix {
    /// Cross-tabulates class indices `0..n_classes` (declared label order).
    pub fn from_indices(
        y_true: &[usize],
        y_pred: &[usize],
        n_classes: usize,
    ) -> Result<Self, MetricError> {
        if y_true.len() != y_pred.len() {
            return Err(MetricError::invalid(
                "y_pred",
                format!(
                    "{} predictions for {} true labels",
                    y_pred.len(),
                    y_true.len()
                ),
            ));
        }
        let mut counts = vec![0u64; n_classes * n_classes];
        for (index, (&t, &p)) in y_true.iter().zip(y_pred).enumerate() {
            if t >= n_classes || p >= n_classes {
                return Err(MetricError::invalid(
                    "y_true/y_pred",
                    format!("sample {index} ({t}, {p}) is outside the {n_classes} declared labels"),
                ));
            }
            counts[t * n_classes + p] += 1;
        }
        Ok(ConfusionMatrix { counts, n_classes })
    }

    /// Builds the matrix from its rows (must be square).
    pub fn from_rows(rows: &[Vec<u64>]) -> Result<Self, MetricError> {
        let k = rows.len();
        if let Some(bad) = rows.iter().position(|row| row.len() != k) {
            return Err(MetricError::invalid(
                "rows",
                format!(
                    "row {bad} has {} columns, the matrix has {k} rows",
                    rows[bad].len()
                ),
            ));
        }
        Ok(ConfusionMatrix {
            counts: rows.concat(),
            n_classes: k,
        })
    }

    /// Number of declared classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Count of samples of true class `truth` predicted as `predicted`.
    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.n_classes + predicted]
    }

    /// The matrix as rows.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.n_classes.max(1))
            .map(<[u64]>::to_vec)
            .collect()
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn true_count(&self, class: usize) -> u64 {
        (0..self.n_classes).map(|p| self.get(class, p)).sum()
    }

    fn predicted_count(&self, class: usize) -> u64 {
        (0..self.n_classes).map(|t| self.get(t, class)).sum()
    }

    /// Share of correct predictions.
    pub fn accuracy(&self) -> Estimate {
        let correct: u64 = (0..self.n_classes).map(|c| self.get(c, c)).sum();
        let total = self.total();
        if total == 0 {
            return Err(Undefined::EmptyInput.into());
        }
        Ok(correct as f64 / total as f64)
    }

    fn present_recalls(&self) -> Estimate<Vec<f64>> {
        let recalls: Vec<f64> = (0..self.n_classes)
            .filter_map(|c| {
                let support = self.true_count(c);
                (support > 0).then(|| self.get(c, c) as f64 / support as f64)
            })
            .collect();
        if recalls.is_empty() {
            return Err(Undefined::EmptyInput.into());
        }
        Ok(recalls)
    }

    /// Mean recall over the classes present in the truth (scikit-learn
    /// `balanced_accuracy_score`: a class seen only in predictions is left out).
    pub fn balanced_accuracy(&self) -> Estimate {
        let recalls = self.present_recalls()?;
        Ok(recalls.iter().sum::<f64>() / recalls.len() as f64)
    }

    /// `(BA - 1/K) / (1 - 1/K)`, K = classes present in the truth; undefined when K = 1.
    pub fn balanced_accuracy_adjusted(&self) -> Estimate {
        let recalls = self.present_recalls()?;
        if recalls.len() < 2 {
            return Err(Undefined::SingleClass.into());
        }
        let score = recalls.iter().sum::<f64>() / recalls.len() as f64;
        let chance = 1.0 / recalls.len() as f64;
        Ok((score - chance) / (1.0 - chance))
    }

    /// One-vs-rest metrics of class `class`.
    pub fn class_metrics(&self, class: usize) -> ClassMetrics {
        let tp = self.get(class, class);
        let support = self.true_count(class);
        let predicted = self.predicted_count(class);
        let false_negative = support - tp;
        let false_positive = predicted - tp;
        let true_negative = self.total() - support - false_positive;
        ClassMetrics {
            support,
            sensitivity: ratio(
                tp as f64,
                support as f64,
                "recall of a class absent from the truth",
            ),
            specificity: ratio(
                true_negative as f64,
                (true_negative + false_positive) as f64,
                "specificity when every sample is of this class",
            ),
            precision: ratio(
                tp as f64,
                predicted as f64,
                "precision of a class never predicted",
            ),
            f1: ratio(
                2.0 * tp as f64,
                (2 * tp + false_positive + false_negative) as f64,
                "F1 of a class neither true nor predicted",
            ),
        }
    }

    /// One-vs-rest metrics of every declared class, in declared order.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        (0..self.n_classes).map(|c| self.class_metrics(c)).collect()
    }

    /// Macro F1 over all declared classes.
    pub fn f1_macro(&self, zero_division: ZeroDivision) -> Estimate {
        let all: Vec<usize> = (0..self.n_classes).collect();
        self.f1_macro_over(&all, zero_division)
    }

    /// Macro F1 over a subset of classes (samples of other classes still count as errors).
    pub fn f1_macro_over(&self, classes: &[usize], zero_division: ZeroDivision) -> Estimate {
        let mut scores = Vec::with_capacity(classes.len());
        for &class in classes {
            if class >= self.n_classes {
                return Err(MetricError::invalid(
                    "classes",
                    format!(
                        "class {class} is outside the {} declared classes",
                        self.n_classes
                    ),
                ));
            }
            match (self.class_metrics(class).f1, zero_division) {
                (Ok(f1), _) => scores.push(f1),
                (Err(_), ZeroDivision::Zero) => scores.push(0.0),
                (Err(_), ZeroDivision::Exclude) => {}
            }
        }
        if scores.is_empty() {
            return Err(Undefined::ZeroDivision("no class with a defined F1").into());
        }
        Ok(scores.iter().sum::<f64>() / scores.len() as f64)
    }

    /// Matthews correlation coefficient (multiclass R_K). Undefined when the truth
    /// or the predictions hold a single class (scikit-learn returns 0.0 there).
    pub fn mcc(&self) -> Estimate {
        let k = self.n_classes;
        let samples = self.total() as f64;
        let correct: f64 = (0..k).map(|c| self.get(c, c) as f64).sum();
        let truth: Vec<f64> = (0..k).map(|c| self.true_count(c) as f64).collect();
        let predicted: Vec<f64> = (0..k).map(|c| self.predicted_count(c) as f64).collect();
        let cross: f64 = truth.iter().zip(&predicted).map(|(t, p)| t * p).sum();
        let covariance = correct * samples - cross;
        let spread_predicted = samples * samples - predicted.iter().map(|p| p * p).sum::<f64>();
        let spread_truth = samples * samples - truth.iter().map(|t| t * t).sum::<f64>();
        let denominator = (spread_predicted * spread_truth).sqrt();
        ratio(
            covariance,
            denominator,
            "MCC with a constant truth or prediction",
        )
    }
}

/// Points of a ROC curve, by decreasing threshold; the first point is (0, 0) at threshold +inf.
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    /// False positive rates.
    pub fpr: Vec<f64>,
    /// True positive rates.
    pub tpr: Vec<f64>,
    /// Score thresholds (a sample is positive when its score >= threshold).
    pub thresholds: Vec<f64>,
}

fn check_scores(is_positive: &[bool], scores: &[f64]) -> Result<(usize, usize), MetricError> {
    if is_positive.len() != scores.len() {
        return Err(MetricError::invalid(
            "scores",
            format!("{} scores for {} labels", scores.len(), is_positive.len()),
        ));
    }
    if let Some(bad) = scores.iter().position(|s| s.is_nan()) {
        return Err(MetricError::invalid(
            "scores",
            format!("score {bad} is NaN"),
        ));
    }
    let positives = is_positive.iter().filter(|&&p| p).count();
    let negatives = is_positive.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(Undefined::SingleClass.into());
    }
    Ok((positives, negatives))
}

/// ROC curve with every distinct score as a threshold (no point dropped).
pub fn roc_curve(is_positive: &[bool], scores: &[f64]) -> Estimate<RocCurve> {
    let (positives, negatives) = check_scores(is_positive, scores)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut curve = RocCurve {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f64::INFINITY],
    };
    let (mut tp, mut fp) = (0usize, 0usize);
    for (rank, &sample) in order.iter().enumerate() {
        if is_positive[sample] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order
            .get(rank + 1)
            .is_none_or(|&next| scores[next] != scores[sample]);
        if last_of_tie {
            curve.fpr.push(fp as f64 / negatives as f64);
            curve.tpr.push(tp as f64 / positives as f64);
            curve.thresholds.push(scores[sample]);
        }
    }
    Ok(curve)
}

/// Binary ROC AUC, equal to the Mann-Whitney statistic with tied scores counting 1/2.
pub fn roc_auc(is_positive: &[bool], scores: &[f64]) -> Estimate {
    let (positives, negatives) = check_scores(is_positive, scores)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Twice the rank sum of the positives, with tied groups sharing their mean rank.
    let mut doubled_rank_sum = 0u64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        let doubled_mean_rank = (start + 1 + end + 1) as u64;
        let tied_positives = order[start..=end]
            .iter()
            .filter(|&&s| is_positive[s])
            .count() as u64;
        doubled_rank_sum += doubled_mean_rank * tied_positives;
        start = end + 1;
    }
    let p = positives as u64;
    let doubled_u = doubled_rank_sum - p * (p + 1);
    Ok(doubled_u as f64 / (2.0 * positives as f64 * negatives as f64))
}

/// One-vs-rest ROC AUCs of a multiclass problem.
#[derive(Debug, Clone, PartialEq)]
pub struct OneVsRestAuc {
    /// AUC of each class against the others, in class index order.
    pub per_class: Vec<f64>,
    /// Unweighted mean of `per_class`.
    pub macro_average: f64,
    /// Mean of `per_class` weighted by class prevalence in the truth.
    pub weighted_average: f64,
}

fn check_multiclass(y_true: &[usize], scores: &[f64], n_classes: usize) -> Result<(), MetricError> {
    if n_classes < 2 {
        return Err(MetricError::invalid(
            "n_classes",
            "needs at least 2 classes",
        ));
    }
    if scores.len() != y_true.len() * n_classes {
        return Err(MetricError::invalid(
            "scores",
            format!(
                "{} scores for {} samples x {n_classes} classes",
                scores.len(),
                y_true.len()
            ),
        ));
    }
    if let Some(bad) = y_true.iter().position(|&t| t >= n_classes) {
        return Err(MetricError::invalid(
            "y_true",
            format!("sample {bad} has class {} of {n_classes}", y_true[bad]),
        ));
    }
    Ok(())
}

/// One-vs-rest ROC AUC; `scores` is row-major samples x classes, column c scoring class c.
/// Undefined when a class is absent from the truth.
pub fn roc_auc_one_vs_rest(
    y_true: &[usize],
    scores: &[f64],
    n_classes: usize,
) -> Estimate<OneVsRestAuc> {
    check_multiclass(y_true, scores, n_classes)?;
    let mut per_class = Vec::with_capacity(n_classes);
    let mut weighted = 0.0;
    for class in 0..n_classes {
        let is_positive: Vec<bool> = y_true.iter().map(|&t| t == class).collect();
        let column: Vec<f64> = scores
            .iter()
            .skip(class)
            .step_by(n_classes)
            .copied()
            .collect();
        let auc = roc_auc(&is_positive, &column)?;
        let prevalence = is_positive.iter().filter(|&&p| p).count() as f64 / y_true.len() as f64;
        weighted += prevalence * auc;
        per_class.push(auc);
    }
    let macro_average = per_class.iter().sum::<f64>() / n_classes as f64;
    Ok(OneVsRestAuc {
        per_class,
        macro_average,
        weighted_average: weighted,
    })
}

/// One-vs-one macro ROC AUC (Hand & Till, as scikit-learn `multi_class='ovo'`).
pub fn roc_auc_one_vs_one_macro(y_true: &[usize], scores: &[f64], n_classes: usize) -> Estimate {
    check_multiclass(y_true, scores, n_classes)?;
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for a in 0..n_classes {
        for b in a + 1..n_classes {
            let members: Vec<usize> = (0..y_true.len())
                .filter(|&i| y_true[i] == a || y_true[i] == b)
                .collect();
            let auc_for = |class: usize| {
                let is_positive: Vec<bool> = members.iter().map(|&i| y_true[i] == class).collect();
                let column: Vec<f64> = members
                    .iter()
                    .map(|&i| scores[i * n_classes + class])
                    .collect();
                roc_auc(&is_positive, &column)
            };
            sum += (auc_for(a)? + auc_for(b)?) / 2.0;
            pairs += 1;
        }
    }
    Ok(sum / pairs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        let labels = [false, true, false, true];
        let scores = [0.1, 0.5, 0.5, 0.9];
        // pairs (pos, neg): (0.5,0.1)=1, (0.5,0.5)=0.5, (0.9,0.1)=1, (0.9,0.5)=1 -> 3.5/4
        assert!((roc_auc(&labels, &scores).unwrap() - 0.875).abs() < 1e-15);
        let curve = roc_curve(&labels, &scores).unwrap();
        assert_eq!(curve.thresholds, vec![f64::INFINITY, 0.9, 0.5, 0.1]);
        assert_eq!(curve.tpr, vec![0.0, 0.5, 1.0, 1.0]);
        assert_eq!(curve.fpr, vec![0.0, 0.0, 0.5, 1.0]);
        assert!(roc_auc(&[true, true], &[0.1, 0.2]).is_err());
    }

    #[test]
    fn constant_prediction_gives_undefined_mcc() {
        let m = ConfusionMatrix::from_indices(&[0, 1, 1], &[1, 1, 1], 2).unwrap();
        assert!(m.mcc().is_err());
        assert!((m.balanced_accuracy().unwrap() - 0.5).abs() < 1e-15);
        let metrics = m.class_metrics(0);
        assert!(metrics.precision.is_err());
        assert_eq!(metrics.f1, Ok(0.0));
        assert!(ConfusionMatrix::from_indices(&[0, 3], &[0, 0], 2).is_err());
    }
}
