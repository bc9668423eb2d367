//! Dawid-Skene latent truth: the EM estimate of each subject's true class and each
//! rater's confusion matrix from ratings with missing cells.
//!
//! The algorithm follows crowd-kit's `DawidSkene` (1.4.2) step for step, so that both
//! give the same numbers (`tests/it/metrics_reference.rs` checks 1e-6):
//! - start: the majority-vote shares of each subject (ties split evenly);
//! - M-step: per rater, the posterior mass of each true class summed per given label,
//!   floored at 1e-10 for the labels that rater gave (a label a rater never gave has
//!   probability 0), normalised per true class;
//! - E-step: prior (floored at 1e-10) times the rater likelihoods, in logs;
//! - the loss is crowd-kit's evidence lower bound per rating; EM stops when it gains
//!   less than the tolerance, or after the maximum number of iterations.
//!
//! Subjects that nobody rated have no posterior; raters who rated nothing have no
//! confusion matrix.

use super::ratings::Ratings;
use super::undefined::{MetricError, Undefined};

/// Floor of probabilities and counts, as in crowd-kit (`_EPS`).
const FLOOR: f64 = 1e-10;

/// When EM stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DawidSkeneConfig {
    /// At most this many E/M iterations after the majority-vote start.
    pub max_iterations: usize,
    /// Stop when the loss gains less than this.
    pub tolerance: f64,
}

impl Default for DawidSkeneConfig {
    /// crowd-kit's defaults.
    fn default() -> Self {
        Self {
            max_iterations: 100,
            tolerance: 1e-5,
        }
    }
}

/// The fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct DawidSkene {
    /// Per subject, the posterior probability of each class; `None` for a subject
    /// without ratings.
    pub posteriors: Vec<Option<Vec<f64>>>,
    /// Class prior (mean posterior over rated subjects, floored at 1e-10).
    pub priors: Vec<f64>,
    /// Per rater, `confusion[true][given]` = P(rater gives `given` | true class is
    /// `true`); `None` for a rater without ratings.
    pub confusion: Vec<Option<Vec<Vec<f64>>>>,
    /// E/M iterations run.
    pub iterations: usize,
    /// `true` when the loss gain fell below the tolerance before the iteration limit.
    pub converged: bool,
    /// The loss (evidence lower bound per rating) after each iteration.
    pub loss_history: Vec<f64>,
}

impl DawidSkene {
    /// The most probable class of a subject (the first of equal ones).
    pub fn hard_label(&self, subject: usize) -> Option<usize> {
        let p = self.posteriors.get(subject)?.as_ref()?;
        let mut best = 0;
        for (c, &v) in p.iter().enumerate() {
            if v > p[best] {
                best = c;
            }
        }
        Some(best)
    }

    /// Sensitivity (recall) of a rater for a class: P(gives c | true c).
    pub fn sensitivity(&self, rater: usize, class: usize) -> Option<f64> {
        let m = self.confusion.get(rater)?.as_ref()?;
        Some(m[class][class])
    }

    /// Specificity of a rater for a class: P(does not give c | true class is not c),
    /// the other classes weighted by their prior.
    pub fn specificity(&self, rater: usize, class: usize) -> Option<f64> {
        let m = self.confusion.get(rater)?.as_ref()?;
        let (mut kept, mut mass) = (0.0, 0.0);
        for (t, row) in m.iter().enumerate() {
            if t == class {
                continue;
            }
            kept += self.priors[t] * (1.0 - row[class]);
            mass += self.priors[t];
        }
        (mass > 0.0).then(|| kept / mass)
    }
}

/// One rating: (subject row among the rated subjects, rater, given class).
type Response = (usize, usize, usize);

/// Fits the Dawid-Skene model to `ratings` (subjects x raters, missing cells allowed).
pub fn dawid_skene(
    ratings: &Ratings,
    config: &DawidSkeneConfig,
) -> Result<DawidSkene, MetricError> {
    let k = ratings.n_categories();
    let n_raters = ratings.n_raters();
    if k == 0 {
        return Err(MetricError::invalid("ratings", "no declared category"));
    }
    if !config.tolerance.is_finite() {
        return Err(MetricError::invalid("tolerance", "must be a finite number"));
    }
    let mut rated_subjects = Vec::new();
    let mut responses: Vec<Response> = Vec::new();
    for subject in 0..ratings.n_subjects() {
        let row = ratings.subject(subject);
        if row.iter().all(Option::is_none) {
            continue;
        }
        let index = rated_subjects.len();
        rated_subjects.push(subject);
        for (rater, cell) in row.iter().enumerate() {
            if let Some(class) = *cell {
                responses.push((index, rater, class));
            }
        }
    }
    if responses.is_empty() {
        return Err(MetricError::Undefined(Undefined::EmptyInput));
    }
    let n = rated_subjects.len();
    let mut gave = vec![vec![false; k]; n_raters];
    for &(_, rater, class) in &responses {
        gave[rater][class] = true;
    }

    // Flat arrays (subject-major posteriors, `errors[(rater * k + given) * k + true]`),
    // every sum taken in the order of the nested form, so the results are the same bits.
    let mut posterior = vec![0.0; n * k];
    for &(s, _, class) in &responses {
        posterior[s * k + class] += 1.0;
    }
    for row in posterior.chunks_mut(k) {
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= total);
    }
    let mut priors = mean_rows(&posterior, k);
    let mut errors = m_step(&responses, &posterior, &gave, k);
    let mut loss = f64::NEG_INFINITY;
    let mut history = Vec::new();
    let mut converged = false;
    let mut log_errors = vec![0.0; errors.len()];
    for _ in 0..config.max_iterations {
        // The logarithms of the few confusion entries, once, instead of once per rating.
        for (l, e) in log_errors.iter_mut().zip(&errors) {
            *l = e.log2();
        }
        e_step(&responses, &mut posterior, &priors, &log_errors, k);
        priors = mean_rows(&posterior, k);
        errors = m_step(&responses, &posterior, &gave, k);
        for (l, e) in log_errors.iter_mut().zip(&errors) {
            *l = e.ln();
        }
        let new_loss = lower_bound(&responses, &posterior, &priors, &log_errors, k);
        history.push(new_loss);
        if new_loss - loss < config.tolerance {
            converged = true;
            break;
        }
        loss = new_loss;
    }
    // crowd-kit reports posteriors and priors floored at 1e-10 (not renormalised).
    posterior.iter_mut().for_each(|v| *v = v.max(FLOOR));
    priors.iter_mut().for_each(|v| *v = v.max(FLOOR));

    let mut posteriors = vec![None; ratings.n_subjects()];
    for (row, subject) in posterior.chunks(k).zip(rated_subjects) {
        posteriors[subject] = Some(row.to_vec());
    }
    let confusion = (0..n_raters)
        .map(|r| {
            gave[r].iter().any(|&g| g).then(|| {
                (0..k)
                    .map(|t| (0..k).map(|g| errors[(r * k + g) * k + t]).collect())
                    .collect()
            })
        })
        .collect();
    Ok(DawidSkene {
        posteriors,
        priors,
        confusion,
        iterations: history.len(),
        converged,
        loss_history: history,
    })
}

fn mean_rows(rows: &[f64], k: usize) -> Vec<f64> {
    let mut mean = vec![0.0; k];
    for row in rows.chunks(k) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let n = (rows.len() / k) as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    mean
}

/// `errors[(rater * k + given) * k + true]` = P(given | true).
fn m_step(responses: &[Response], posterior: &[f64], gave: &[Vec<bool>], k: usize) -> Vec<f64> {
    let mut errors = vec![0.0; gave.len() * k * k];
    for &(s, rater, given) in responses {
        let at = (rater * k + given) * k;
        for (e, p) in errors[at..at + k]
            .iter_mut()
            .zip(&posterior[s * k..s * k + k])
        {
            *e += p;
        }
    }
    for (rater, matrix) in errors.chunks_mut(k * k).enumerate() {
        for (given, row) in matrix.chunks_mut(k).enumerate() {
            if gave[rater][given] {
                row.iter_mut().for_each(|e| *e = e.max(FLOOR));
            }
        }
        for t in 0..k {
            let total: f64 = matrix.chunks(k).map(|row| row[t]).sum();
            if total > 0.0 {
                matrix.chunks_mut(k).for_each(|row| row[t] /= total);
            }
        }
    }
    errors
}

/// The posteriors given the priors and `log2_errors` (log2 of the confusion entries),
/// written over `posterior`. Ratings come subject after subject.
fn e_step(
    responses: &[Response],
    posterior: &mut [f64],
    priors: &[f64],
    log2_errors: &[f64],
    k: usize,
) {
    let log_prior: Vec<f64> = priors.iter().map(|p| p.max(FLOOR).log2()).collect();
    for row in posterior.chunks_mut(k) {
        row.copy_from_slice(&log_prior);
    }
    for &(s, rater, given) in responses {
        let at = (rater * k + given) * k;
        for (l, e) in posterior[s * k..s * k + k]
            .iter_mut()
            .zip(&log2_errors[at..at + k])
        {
            *l += e;
        }
    }
    for row in posterior.chunks_mut(k) {
        // Shifted so that the largest term is 2^0: the products underflow otherwise.
        let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|l| *l = (*l - top).exp2());
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= total);
    }
}

/// crowd-kit's evidence lower bound per rating: for every rating, the expected log of
/// the prior and of the rater's probability of the given label, plus the posterior
/// entropy (posteriors floored at 1e-10 there). `ln_errors`: the confusion entries' ln.
fn lower_bound(
    responses: &[Response],
    posterior: &[f64],
    priors: &[f64],
    ln_errors: &[f64],
    k: usize,
) -> f64 {
    let log_prior: Vec<f64> = priors.iter().map(|p| p.max(FLOOR).ln()).collect();
    let mut joint = 0.0;
    for &(s, rater, given) in responses {
        let at = (rater * k + given) * k;
        for ((p, e), lp) in posterior[s * k..s * k + k]
            .iter()
            .zip(&ln_errors[at..at + k])
            .zip(&log_prior)
        {
            joint += p * (e + lp);
        }
    }
    let entropy: f64 = posterior
        .iter()
        .map(|&p| {
            let q = p.max(FLOOR);
            -q * q.ln()
        })
        .sum();
    (joint + entropy) / responses.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(rows: &[Vec<Option<usize>>], k: usize) -> DawidSkene {
        let ratings = Ratings::from_rows(rows, k).expect("ratings");
        dawid_skene(&ratings, &DawidSkeneConfig::default()).expect("fit")
    }

    #[test]
    fn unanimous_raters_give_certain_posteriors_and_perfect_raters() {
        let rows: Vec<Vec<Option<usize>>> = (0..6)
            .map(|i| vec![Some(i % 2), Some(i % 2), Some(i % 2)])
            .collect();
        let ds = fit(&rows, 2);
        for (i, p) in ds.posteriors.iter().enumerate() {
            let p = p.as_ref().expect("rated");
            assert!((p[i % 2] - 1.0).abs() < 1e-9, "{p:?}");
        }
        assert!(ds.converged);
        assert!((ds.sensitivity(0, 1).expect("rater") - 1.0).abs() < 1e-9);
        assert!((ds.specificity(2, 0).expect("rater") - 1.0).abs() < 1e-9);
    }

    #[test]
    fn unrated_subjects_and_raters_have_no_estimate() {
        let rows = vec![
            vec![Some(0), Some(0), None],
            vec![None, None, None],
            vec![Some(1), Some(1), None],
        ];
        let ds = fit(&rows, 2);
        assert!(ds.posteriors[1].is_none());
        assert!(ds.confusion[2].is_none());
        assert_eq!(ds.hard_label(2), Some(1));
        assert_eq!(ds.hard_label(1), None);
    }

    #[test]
    fn a_lone_dissenter_loses_a_tie_to_the_reliable_rater() {
        // Raters 0 and 1 agree on everything; rater 2 often disagrees. On the last
        // image only raters 0 and 2 rated, and disagree: majority vote cannot
        // decide, Dawid-Skene follows rater 0.
        let mut rows = Vec::new();
        for i in 0..20 {
            let truth = i % 2;
            let noisy = if i % 3 == 0 { 1 - truth } else { truth };
            rows.push(vec![Some(truth), Some(truth), Some(noisy)]);
        }
        rows.push(vec![Some(1), None, Some(0)]);
        let ds = fit(&rows, 2);
        assert_eq!(ds.hard_label(20), Some(1));
        let p = ds.posteriors[20].as_ref().expect("rated");
        assert!(p[1] > 0.9, "{p:?}");
    }

    #[test]
    fn no_rating_is_undefined() {
        let ratings = Ratings::from_rows(&[vec![None, None]], 2).expect("ratings");
        assert!(dawid_skene(&ratings, &DawidSkeneConfig::default()).is_err());
    }
}
