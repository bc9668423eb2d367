//! Calibration and operating points: temperature scaling, expected calibration error,
//! and the decision threshold that reaches a target sensitivity or specificity.
//!
//! Temperature scaling divides a classifier's logits by one number `T` fitted to
//! minimise the negative log-likelihood on held-out data (Guo et al. 2017). The
//! logits here are the logarithms of the stored class probabilities: softmax is
//! blind to a constant added per row, so `softmax(ln p / T)` is the same model.

use super::undefined::{Estimate, MetricError, Undefined};

/// Probabilities below this are read as this before taking logarithms.
const LOG_FLOOR: f64 = 1e-12;

/// A fitted temperature and the negative log-likelihood (mean per sample) before
/// (`T = 1`) and after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Temperature {
    pub temperature: f64,
    pub nll_before: f64,
    pub nll_after: f64,
    /// `true` when the optimum lies at a bound of the search ([1e-3, 1e3]): the data
    /// are separable and the likelihood keeps improving as `T` shrinks (or grows).
    pub at_bound: bool,
}

fn logits(probabilities: &[f64]) -> Vec<f64> {
    probabilities
        .iter()
        .map(|p| p.max(LOG_FLOOR).ln())
        .collect()
}

/// Mean negative log-likelihood of `softmax(beta * z)` and its first two derivatives
/// in `beta`.
fn nll_and_derivatives(rows: &[(Vec<f64>, usize)], beta: f64) -> (f64, f64, f64) {
    let (mut nll, mut d1, mut d2) = (0.0, 0.0, 0.0);
    for (z, y) in rows {
        let top = z.iter().map(|v| beta * v).fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = z.iter().map(|v| (beta * v - top).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mean: f64 = z.iter().zip(&weights).map(|(v, w)| v * w).sum::<f64>() / total;
        let second: f64 = z.iter().zip(&weights).map(|(v, w)| v * v * w).sum::<f64>() / total;
        nll += top + total.ln() - beta * z[*y];
        d1 += mean - z[*y];
        d2 += (second - mean * mean).max(0.0);
    }
    let n = rows.len() as f64;
    (nll / n, d1 / n, d2 / n)
}

fn checked_rows(probabilities: &[Vec<f64>], labels: &[usize]) -> Estimate<Vec<(Vec<f64>, usize)>> {
    if probabilities.len() != labels.len() {
        return Err(MetricError::invalid(
            "labels",
            format!(
                "{} labels for {} probability rows",
                labels.len(),
                probabilities.len()
            ),
        ));
    }
    if probabilities.is_empty() {
        return Err(MetricError::Undefined(Undefined::EmptyInput));
    }
    probabilities
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (p, &y))| {
            if y >= p.len() {
                return Err(MetricError::invalid(
                    "labels",
                    format!("sample {i} has class {y} of {} classes", p.len()),
                ));
            }
            if p.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(MetricError::invalid(
                    "probabilities",
                    format!("sample {i} has a probability that is negative or not finite"),
                ));
            }
            Ok((logits(p), y))
        })
        .collect()
}

/// The temperatures [`fit_temperature`] searches between.
pub const TEMPERATURE_RANGE: (f64, f64) = (1e-3, 1e3);

/// Whether a fitted temperature sits on a bound of the search: the likelihood still
/// improved towards it (for the lower bound, the validation images are separated
/// perfectly), so the value says where the search stopped, not a calibration.
pub fn temperature_at_bound(temperature: f64) -> bool {
    let (lo, hi) = TEMPERATURE_RANGE;
    temperature <= lo * (1.0 + 1e-9) || temperature >= hi * (1.0 - 1e-9)
}

/// Fits the temperature minimising the mean negative log-likelihood of `labels` under
/// `softmax(ln p / T)`. The likelihood is convex in `1 / T`: bisection on the sign of
/// its derivative over `T` in [1e-3, 1e3] (log scale), then Newton steps.
pub fn fit_temperature(probabilities: &[Vec<f64>], labels: &[usize]) -> Estimate<Temperature> {
    let rows = checked_rows(probabilities, labels)?;
    let (nll_before, _, _) = nll_and_derivatives(&rows, 1.0);
    let (lo_beta, hi_beta) = (1.0 / TEMPERATURE_RANGE.1, 1.0 / TEMPERATURE_RANGE.0);
    let slope = |beta: f64| nll_and_derivatives(&rows, beta).1;
    if nll_and_derivatives(&rows, 1.0).2 == 0.0 {
        return Err(MetricError::Undefined(Undefined::SingleValueDomain));
    }
    let (beta, at_bound) = if slope(lo_beta) >= 0.0 {
        (lo_beta, true)
    } else if slope(hi_beta) <= 0.0 {
        (hi_beta, true)
    } else {
        let (mut lo, mut hi) = (lo_beta.ln(), hi_beta.ln());
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if slope(mid.exp()) < 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo < 1e-14 {
                break;
            }
        }
        let mut beta = (0.5 * (lo + hi)).exp();
        for _ in 0..3 {
            let (_, d1, d2) = nll_and_derivatives(&rows, beta);
            if d2 <= 0.0 {
                break;
            }
            let next = beta - d1 / d2;
            if next.is_nan() || next <= 0.0 || (next - beta).abs() > 1e-6 * beta {
                break;
            }
            beta = next;
        }
        (beta, false)
    };
    let (nll_after, _, _) = nll_and_derivatives(&rows, beta);
    Ok(Temperature {
        temperature: 1.0 / beta,
        nll_before,
        nll_after,
        at_bound,
    })
}

/// `softmax(ln p / T)`.
pub fn apply_temperature(probabilities: &[f64], temperature: f64) -> Vec<f64> {
    let z: Vec<f64> = logits(probabilities)
        .iter()
        .map(|v| v / temperature)
        .collect();
    let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = z.iter().map(|v| (v - top).exp()).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|v| v / total).collect()
}

/// Expected calibration error with `bins` equal-width bins of the top-class
/// confidence (bin `min(floor(conf * bins), bins - 1)`; ties in the top class go to
/// the first): sum over bins of |accuracy - mean confidence| times the bin's share.
pub fn expected_calibration_error(
    probabilities: &[Vec<f64>],
    labels: &[usize],
    bins: usize,
) -> Estimate {
    let rows = checked_rows(probabilities, labels)?;
    if bins == 0 {
        return Err(MetricError::invalid("bins", "must be at least 1"));
    }
    let mut sums = vec![(0.0f64, 0.0f64); bins];
    for ((p, &y), _) in probabilities.iter().zip(labels).zip(&rows) {
        let mut top = 0;
        for (c, &v) in p.iter().enumerate() {
            if v > p[top] {
                top = c;
            }
        }
        let b = ((p[top] * bins as f64) as usize).min(bins - 1);
        sums[b].0 += p[top];
        sums[b].1 += f64::from(u8::from(top == y));
    }
    let n = probabilities.len() as f64;
    Ok(sums.iter().map(|(conf, hit)| (hit - conf).abs() / n).sum())
}

/// What an operating point must reach on the data it is chosen on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OperatingTarget {
    Sensitivity(f64),
    Specificity(f64),
}

/// The threshold on the positive-class score (flag when `score >= threshold`) that
/// reaches the target: for sensitivity, the highest such threshold (the fewest images
/// flagged); for specificity, the lowest (the most positives caught).
pub fn threshold_for(scores: &[f64], positive: &[bool], target: OperatingTarget) -> Estimate {
    if scores.len() != positive.len() {
        return Err(MetricError::invalid(
            "positive",
            format!("{} flags for {} scores", positive.len(), scores.len()),
        ));
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(MetricError::invalid("scores", "a score is not finite"));
    }
    let (rate, want_positive) = match target {
        OperatingTarget::Sensitivity(r) => (r, true),
        OperatingTarget::Specificity(r) => (r, false),
    };
    if !(rate > 0.0 && rate <= 1.0) {
        return Err(MetricError::invalid(
            "target",
            format!("{rate} is not in (0, 1]"),
        ));
    }
    let mut class: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p == want_positive)
        .map(|(s, _)| *s)
        .collect();
    if class.is_empty() {
        return Err(MetricError::Undefined(Undefined::SingleClass));
    }
    // Round-off guard: 0.95 * 20 must count as 19, not 19.000000000000004.
    let needed = ((rate * class.len() as f64) - 1e-9).ceil().max(1.0) as usize;
    if want_positive {
        class.sort_by(|a, b| b.total_cmp(a));
        Ok(class[needed - 1])
    } else {
        class.sort_by(f64::total_cmp);
        let kept = class[needed - 1];
        // Just above the `needed`-th lowest negative: halfway to the next higher score.
        let next = scores
            .iter()
            .copied()
            .filter(|s| *s > kept)
            .fold(f64::INFINITY, f64::min);
        Ok(if next.is_finite() {
            0.5 * (kept + next)
        } else {
            kept + (kept.abs() * 1e-9).max(1e-12)
        })
    }
}

/// Triage by two thresholds on the positive-class score: images scoring below `accept`
/// are accepted without a person, images at or above `reject` are rejected without a
/// person, and the band between goes to people.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TriageBand {
    pub accept: f64,
    pub reject: f64,
}

/// What triage does with one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriageDecision {
    Accept,
    Review,
    Reject,
}

impl TriageBand {
    /// On the data it is chosen on, at least `rate` of the positives are kept from
    /// automatic acceptance (sensitivity) and at least `rate` of the negatives from
    /// automatic rejection (specificity). Where the two thresholds cross, the band is
    /// empty and both guarantees still hold.
    pub fn for_rate(scores: &[f64], positive: &[bool], rate: f64) -> Result<Self, MetricError> {
        let accept = threshold_for(scores, positive, OperatingTarget::Sensitivity(rate))?;
        let reject = threshold_for(scores, positive, OperatingTarget::Specificity(rate))?;
        Ok(Self {
            accept,
            reject: reject.max(accept),
        })
    }

    pub fn decide(&self, score: f64) -> TriageDecision {
        if score < self.accept {
            TriageDecision::Accept
        } else if score >= self.reject {
            TriageDecision::Reject
        } else {
            TriageDecision::Review
        }
    }
}

/// Sensitivity and specificity of flagging `score >= threshold`.
pub fn rates_at(scores: &[f64], positive: &[bool], threshold: f64) -> (Option<f64>, Option<f64>) {
    let (mut tp, mut p, mut tn, mut n) = (0u64, 0u64, 0u64, 0u64);
    for (s, pos) in scores.iter().zip(positive) {
        let flagged = *s >= threshold;
        if *pos {
            p += 1;
            tp += u64::from(flagged);
        } else {
            n += 1;
            tn += u64::from(!flagged);
        }
    }
    (
        (p > 0).then(|| tp as f64 / p as f64),
        (n > 0).then(|| tn as f64 / n as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibrated_model_keeps_temperature_one() {
        // Confidence 0.75 on two classes, right three times in four: calibrated.
        let p = vec![vec![0.75, 0.25]; 4];
        let t = fit_temperature(&p, &[0, 0, 0, 1]).expect("fit");
        assert!((t.temperature - 1.0).abs() < 1e-9, "{t:?}");
        assert!(!t.at_bound);
        let ece = expected_calibration_error(&p, &[0, 0, 0, 1], 10).expect("ece");
        assert!(ece.abs() < 1e-12);
    }

    #[test]
    fn an_overconfident_model_gets_a_temperature_above_one() {
        let p = vec![vec![0.99, 0.01]; 10];
        let labels = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1];
        let t = fit_temperature(&p, &labels).expect("fit");
        assert!(t.temperature > 1.0 && t.nll_after < t.nll_before, "{t:?}");
        // The fitted model says 0.7, the observed share.
        let q = apply_temperature(&p[0], t.temperature);
        assert!((q[0] - 0.7).abs() < 1e-9, "{q:?}");
    }

    #[test]
    fn perfectly_separated_validation_images_leave_the_temperature_at_its_bound() {
        // Every image on the right side: sharper is always likelier, down to the bound.
        let p = vec![vec![0.8, 0.2], vec![0.3, 0.7]];
        let t = fit_temperature(&p, &[0, 1]).expect("fit");
        assert!(t.at_bound, "{t:?}");
        assert!(temperature_at_bound(t.temperature), "{t:?}");
        assert!(!temperature_at_bound(1.0) && !temperature_at_bound(0.0011));
        assert!(temperature_at_bound(TEMPERATURE_RANGE.1));
    }

    #[test]
    fn thresholds_reach_their_targets() {
        let scores = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9];
        let positive = [false, false, true, false, true, false, true, true];
        let t = threshold_for(&scores, &positive, OperatingTarget::Sensitivity(0.75)).expect("t");
        assert_eq!(t, 0.6);
        assert_eq!(rates_at(&scores, &positive, t).0, Some(0.75));
        let t = threshold_for(&scores, &positive, OperatingTarget::Specificity(0.75)).expect("t");
        let (_, spec) = rates_at(&scores, &positive, t);
        assert_eq!(spec, Some(0.75));
        assert!(t > 0.4 && t <= 0.6, "{t}");
        assert!(threshold_for(&scores, &[false; 8], OperatingTarget::Sensitivity(0.9)).is_err());
    }

    #[test]
    fn triage_keeps_both_guarantees_and_reviews_the_band_between() {
        let scores = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9];
        let positive = [false, false, true, false, true, false, true, true];
        let band = TriageBand::for_rate(&scores, &positive, 0.9).expect("band");
        // Every positive scores 0.3 or more (0.9 of four positives is all four); all four
        // negatives score under 0.75 (halfway from 0.7 to the next score, 0.8).
        assert_eq!(band.accept, 0.3);
        assert!((band.reject - 0.75).abs() < 1e-12, "{band:?}");
        let decisions: Vec<TriageDecision> = scores.iter().map(|s| band.decide(*s)).collect();
        use TriageDecision::*;
        assert_eq!(
            decisions,
            [
                Accept, Accept, Review, Review, Review, Review, Reject, Reject
            ]
        );
        // Crossing thresholds: an empty band, everything decided, guarantees kept.
        let easy = [0.1, 0.2, 0.8, 0.9];
        let truth = [false, false, true, true];
        let band = TriageBand::for_rate(&easy, &truth, 0.5).expect("band");
        assert_eq!(band.accept, band.reject);
        assert!(easy.iter().all(|s| band.decide(*s) != Review));
        let (sens, spec) = rates_at(&easy, &truth, band.accept);
        assert!(sens >= Some(0.5) && spec >= Some(0.5));
        assert!(TriageBand::for_rate(&easy, &[true; 4], 0.9).is_err());
    }
}
