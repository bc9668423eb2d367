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
//!
//! Subjects with the same labels from the same raters have the same posterior at every
//! step, so EM runs once per distinct rating row, weighted by how many subjects share
//! it: the sums over subjects become sums over at most (classes + 1)^raters rows, equal
//! to the per-subject sums up to rounding (1e-12, checked against the per-subject fit).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

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
    /// For ordered classes (a quality grade): pseudo-counts of this total weight added to
    /// each row of every rater's confusion matrix, halving with each class between the
    /// true and the given one, so that a rater with few ratings is assumed to confuse
    /// neighbouring grades rather than far ones (a Dirichlet prior; the M-step becomes a
    /// MAP estimate). `None`: crowd-kit's maximum likelihood.
    pub ordinal_prior: Option<f64>,
}

impl Default for DawidSkeneConfig {
    /// crowd-kit's defaults.
    fn default() -> Self {
        Self {
            max_iterations: 100,
            tolerance: 1e-5,
            ordinal_prior: None,
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

/// The distinct rating rows of the rated subjects: subjects that got the same labels from
/// the same raters have the same posterior at every EM step, so EM runs once per
/// distinct row, weighted by how many subjects share it (200,000 images by 5 raters with
/// 3 classes have at most 4^5 = 1,024 rows).
struct Patterns {
    /// (rater, given class) of every pattern, pattern after pattern.
    responses: Vec<(usize, usize)>,
    /// Pattern p's responses are `responses[starts[p]..starts[p + 1]]`.
    starts: Vec<usize>,
    /// Subjects with each pattern.
    weights: Vec<f64>,
    /// Per subject, its pattern; `None` when nobody rated it.
    of_subject: Vec<Option<usize>>,
    /// Rated subjects.
    subjects: f64,
    /// Ratings in all.
    ratings: f64,
}

impl Patterns {
    fn new(ratings: &Ratings) -> Patterns {
        let mut index: HashMap<&[Option<usize>], usize, BuildHasherDefault<RowHasher>> =
            HashMap::default();
        let mut out = Patterns {
            responses: Vec::new(),
            starts: vec![0],
            weights: Vec::new(),
            of_subject: Vec::with_capacity(ratings.n_subjects()),
            subjects: 0.0,
            ratings: 0.0,
        };
        let mut counts: Vec<u64> = Vec::new();
        for subject in 0..ratings.n_subjects() {
            let row = ratings.subject(subject);
            let given = row.iter().flatten().count();
            if given == 0 {
                out.of_subject.push(None);
                continue;
            }
            let pattern = *index.entry(row).or_insert_with(|| {
                out.responses.extend(
                    row.iter()
                        .enumerate()
                        .filter_map(|(rater, cell)| cell.map(|class| (rater, class))),
                );
                out.starts.push(out.responses.len());
                counts.push(0);
                counts.len() - 1
            });
            counts[pattern] += 1;
            out.of_subject.push(Some(pattern));
            out.subjects += 1.0;
            out.ratings += given as f64;
        }
        out.weights = counts.into_iter().map(|c| c as f64).collect();
        out
    }

    fn len(&self) -> usize {
        self.weights.len()
    }

    fn responses(&self, pattern: usize) -> &[(usize, usize)] {
        &self.responses[self.starts[pattern]..self.starts[pattern + 1]]
    }
}

/// FxHash's mixing step: the rows are short and trusted, SipHash's protection is not
/// needed and costs more than the whole EM here.
#[derive(Default)]
struct RowHasher(u64);

impl Hasher for RowHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

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
    if let Some(weight) = config.ordinal_prior
        && !(weight.is_finite() && weight >= 0.0)
    {
        return Err(MetricError::invalid(
            "ordinal_prior",
            "must be a finite number from 0",
        ));
    }
    let prior_counts = config.ordinal_prior.map(|w| ordinal_counts(w, k));
    let patterns = Patterns::new(ratings);
    if patterns.responses.is_empty() {
        return Err(MetricError::Undefined(Undefined::EmptyInput));
    }
    let mut gave = vec![vec![false; k]; n_raters];
    for &(rater, class) in &patterns.responses {
        gave[rater][class] = true;
    }

    // Posteriors per pattern (pattern-major), `errors[(rater * k + given) * k + true]`.
    let mut posterior = vec![0.0; patterns.len() * k];
    for (p, row) in posterior.chunks_mut(k).enumerate() {
        for &(_, class) in patterns.responses(p) {
            row[class] += 1.0;
        }
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= total);
    }
    let mut priors = weighted_mean(&patterns, &posterior, k);
    let mut errors = m_step(&patterns, &posterior, &gave, k, prior_counts.as_deref());
    let mut loss = f64::NEG_INFINITY;
    let mut history = Vec::new();
    let mut converged = false;
    let mut log_errors = vec![0.0; errors.len()];
    for _ in 0..config.max_iterations {
        for (l, e) in log_errors.iter_mut().zip(&errors) {
            *l = e.log2();
        }
        e_step(&patterns, &mut posterior, &priors, &log_errors, k);
        priors = weighted_mean(&patterns, &posterior, k);
        errors = m_step(&patterns, &posterior, &gave, k, prior_counts.as_deref());
        for (l, e) in log_errors.iter_mut().zip(&errors) {
            *l = e.ln();
        }
        let new_loss = lower_bound(&patterns, &posterior, &priors, &log_errors, k);
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

    let posteriors = patterns
        .of_subject
        .iter()
        .map(|p| p.map(|p| posterior[p * k..(p + 1) * k].to_vec()))
        .collect();
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

/// The mean posterior over the rated subjects.
fn weighted_mean(patterns: &Patterns, posterior: &[f64], k: usize) -> Vec<f64> {
    let mut mean = vec![0.0; k];
    for (row, w) in posterior.chunks(k).zip(&patterns.weights) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += w * v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= patterns.subjects);
    mean
}

/// The ordinal prior's pseudo-counts, `counts[given * k + true]`: `weight` per true
/// class, spread over the given classes as 2^-|given - true|.
fn ordinal_counts(weight: f64, k: usize) -> Vec<f64> {
    let mut counts = vec![0.0; k * k];
    for t in 0..k {
        let shares: Vec<f64> = (0..k).map(|g| 0.5f64.powi(g.abs_diff(t) as i32)).collect();
        let total: f64 = shares.iter().sum();
        for (g, share) in shares.iter().enumerate() {
            counts[g * k + t] = weight * share / total;
        }
    }
    counts
}

/// `errors[(rater * k + given) * k + true]` = P(given | true); `prior_counts` (as
/// [`ordinal_counts`] lays them out) are added to every rater who rated anything.
fn m_step(
    patterns: &Patterns,
    posterior: &[f64],
    gave: &[Vec<bool>],
    k: usize,
    prior_counts: Option<&[f64]>,
) -> Vec<f64> {
    let mut errors = vec![0.0; gave.len() * k * k];
    for (p, (row, w)) in posterior.chunks(k).zip(&patterns.weights).enumerate() {
        for &(rater, given) in patterns.responses(p) {
            let at = (rater * k + given) * k;
            for (e, v) in errors[at..at + k].iter_mut().zip(row) {
                *e += w * v;
            }
        }
    }
    if let Some(counts) = prior_counts {
        for (rater, matrix) in errors.chunks_mut(k * k).enumerate() {
            if gave[rater].iter().any(|&g| g) {
                matrix.iter_mut().zip(counts).for_each(|(e, c)| *e += c);
            }
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
/// written over `posterior`.
fn e_step(
    patterns: &Patterns,
    posterior: &mut [f64],
    priors: &[f64],
    log2_errors: &[f64],
    k: usize,
) {
    let log_prior: Vec<f64> = priors.iter().map(|p| p.max(FLOOR).log2()).collect();
    for (p, row) in posterior.chunks_mut(k).enumerate() {
        row.copy_from_slice(&log_prior);
        for &(rater, given) in patterns.responses(p) {
            let at = (rater * k + given) * k;
            for (l, e) in row.iter_mut().zip(&log2_errors[at..at + k]) {
                *l += e;
            }
        }
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
    patterns: &Patterns,
    posterior: &[f64],
    priors: &[f64],
    ln_errors: &[f64],
    k: usize,
) -> f64 {
    let log_prior: Vec<f64> = priors.iter().map(|p| p.max(FLOOR).ln()).collect();
    let mut joint = 0.0;
    let mut entropy = 0.0;
    for (p, (row, w)) in posterior.chunks(k).zip(&patterns.weights).enumerate() {
        let mut pattern_joint = 0.0;
        for &(rater, given) in patterns.responses(p) {
            let at = (rater * k + given) * k;
            for ((v, e), lp) in row.iter().zip(&ln_errors[at..at + k]).zip(&log_prior) {
                pattern_joint += v * (e + lp);
            }
        }
        let pattern_entropy: f64 = row
            .iter()
            .map(|&v| {
                let q = v.max(FLOOR);
                -q * q.ln()
            })
            .sum();
        joint += w * pattern_joint;
        entropy += w * pattern_entropy;
    }
    (joint + entropy) / patterns.ratings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(rows: &[Vec<Option<usize>>], k: usize) -> DawidSkene {
        let ratings = Ratings::from_rows(rows, k).expect("ratings");
        dawid_skene(&ratings, &DawidSkeneConfig::default()).expect("fit")
    }

    /// The fit subject by subject, every sum over all ratings: what `dawid_skene` did
    /// before it grouped equal rows, kept to check the grouping against.
    mod per_subject {
        use super::super::{DawidSkene, DawidSkeneConfig, FLOOR, MetricError, Ratings, Undefined};

        /// One rating: (subject row among the rated subjects, rater, given class).
        type Response = (usize, usize, usize);

        /// The fit subject by subject, as before rows were grouped: the reference the grouped
        /// fit is checked against.
        pub(super) fn fit(
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
        fn m_step(
            responses: &[Response],
            posterior: &[f64],
            gave: &[Vec<bool>],
            k: usize,
        ) -> Vec<f64> {
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
    }

    /// Seeded ratings: `n` subjects, `raters` raters, `k` classes; each rater labels a
    /// subject with probability `rated`, right with probability 0.5 to 0.9.
    fn simulated(n: usize, raters: usize, k: usize, rated: f64, seed: u64) -> Ratings {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let skill: Vec<f64> = (0..raters).map(|_| rng.random_range(0.5..0.9)).collect();
        let mut cells = Vec::with_capacity(n * raters);
        for _ in 0..n {
            let truth = rng.random_range(0..k);
            for s in &skill {
                cells.push(rng.random_bool(rated).then(|| {
                    if rng.random_bool(*s) {
                        truth
                    } else {
                        rng.random_range(0..k)
                    }
                }));
            }
        }
        Ratings::new(cells, raters, k).expect("ratings")
    }

    #[test]
    fn grouping_equal_rows_gives_the_per_subject_fit() {
        let config = DawidSkeneConfig::default();
        let cases = [
            simulated(3000, 5, 3, 0.8, 1),
            simulated(2000, 3, 2, 0.6, 2),
            simulated(500, 12, 3, 0.3, 3),
            simulated(40, 4, 4, 0.5, 4),
            // A rater who rated nothing, subjects nobody rated.
            Ratings::from_rows(
                &[
                    vec![Some(0), Some(0), None],
                    vec![None, None, None],
                    vec![Some(1), Some(0), None],
                    vec![Some(1), Some(1), None],
                    vec![Some(1), Some(0), None],
                ],
                2,
            )
            .expect("ratings"),
        ];
        let mut largest = 0.0f64;
        for (case, ratings) in cases.iter().enumerate() {
            let grouped = dawid_skene(ratings, &config).expect("fit");
            let reference = per_subject::fit(ratings, &config).expect("fit");
            assert_eq!(grouped.iterations, reference.iterations, "case {case}");
            assert_eq!(grouped.converged, reference.converged, "case {case}");
            let mut compare = |what: &str, a: &[f64], b: &[f64]| {
                assert_eq!(a.len(), b.len(), "case {case}: {what}");
                for (x, y) in a.iter().zip(b) {
                    let d = (x - y).abs();
                    largest = largest.max(d);
                    assert!(d <= 1e-12, "case {case}: {what} {x} against {y}");
                }
            };
            compare("loss", &grouped.loss_history, &reference.loss_history);
            compare("priors", &grouped.priors, &reference.priors);
            assert_eq!(grouped.posteriors.len(), reference.posteriors.len());
            for (a, b) in grouped.posteriors.iter().zip(&reference.posteriors) {
                assert_eq!(a.is_some(), b.is_some(), "case {case}");
                if let (Some(a), Some(b)) = (a, b) {
                    compare("posterior", a, b);
                }
            }
            for (a, b) in grouped.confusion.iter().zip(&reference.confusion) {
                assert_eq!(a.is_some(), b.is_some(), "case {case}");
                if let (Some(a), Some(b)) = (a, b) {
                    compare("confusion", &a.concat(), &b.concat());
                }
            }
        }
        eprintln!("largest difference to the per-subject fit: {largest:e}");
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

    /// Raters of an ordered grade who confuse neighbouring grades (each its own rates),
    /// each subject rated by two of them: the ordinal prior recovers their confusion
    /// matrices and the true grades better than maximum likelihood when each rater has
    /// few ratings, and changes little when they have many.
    #[test]
    fn the_ordinal_prior_helps_raters_with_few_ratings_of_a_grade() {
        use rand::seq::IndexedRandom;
        use rand::{Rng, SeedableRng};
        let (k, raters) = (3usize, 6usize);
        let run = |subjects: usize, seed: u64, prior: Option<f64>| -> (f64, f64) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            // truth[r][t][g]: right 0.6-0.9, the rest mostly on the neighbours.
            let truth: Vec<Vec<Vec<f64>>> = (0..raters)
                .map(|_| {
                    let right = rng.random_range(0.6..0.9);
                    (0..k)
                        .map(|t| {
                            let w: Vec<f64> = (0..k)
                                .map(|g| match g.abs_diff(t) {
                                    0 => 0.0,
                                    1 => 1.0,
                                    _ => 0.1,
                                })
                                .collect();
                            let total: f64 = w.iter().sum();
                            (0..k)
                                .map(|g| {
                                    if g == t {
                                        right
                                    } else {
                                        (1.0 - right) * w[g] / total
                                    }
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect();
            let mut rows = Vec::new();
            let mut grades = Vec::new();
            let everyone: Vec<usize> = (0..raters).collect();
            for _ in 0..subjects {
                let t = [0, 0, 1, 1, 1, 2][rng.random_range(0..6)];
                let mut row = vec![None; raters];
                for &r in everyone.choose_multiple(&mut rng, 2) {
                    let u: f64 = rng.random();
                    let mut acc = 0.0;
                    let mut given = k - 1;
                    for (g, p) in truth[r][t].iter().enumerate() {
                        acc += p;
                        if u < acc {
                            given = g;
                            break;
                        }
                    }
                    row[r] = Some(given);
                }
                rows.push(row);
                grades.push(t);
            }
            let ratings = Ratings::from_rows(&rows, k).expect("ratings");
            let config = DawidSkeneConfig {
                ordinal_prior: prior,
                ..DawidSkeneConfig::default()
            };
            let ds = dawid_skene(&ratings, &config).expect("fit");
            let mut error = 0.0;
            for (r, m) in ds.confusion.iter().enumerate() {
                let m = m.as_ref().expect("every rater rated");
                for t in 0..k {
                    for g in 0..k {
                        error += (m[t][g] - truth[r][t][g]).abs();
                    }
                }
            }
            let right = (0..subjects)
                .filter(|&i| ds.hard_label(i) == Some(grades[i]))
                .count();
            (
                error / (raters * k * k) as f64,
                right as f64 / subjects as f64,
            )
        };
        let mean = |subjects: usize, prior: Option<f64>| {
            let (mut e, mut a) = (0.0, 0.0);
            for seed in 0..20 {
                let (de, da) = run(subjects, seed, prior);
                e += de / 20.0;
                a += da / 20.0;
            }
            (e, a)
        };
        let (few_ml, few_ml_acc) = mean(40, None);
        let (few_map, few_map_acc) = mean(40, Some(2.0));
        let (many_ml, many_ml_acc) = mean(2000, None);
        let (many_map, many_map_acc) = mean(2000, Some(2.0));
        eprintln!(
            "confusion error, grade accuracy: 40 subjects ML {few_ml:.4} {few_ml_acc:.3}, \
             prior {few_map:.4} {few_map_acc:.3}; 2000 subjects ML {many_ml:.4} \
             {many_ml_acc:.3}, prior {many_map:.4} {many_map_acc:.3}"
        );
        assert!(few_map < few_ml * 0.9, "{few_map} vs {few_ml}");
        assert!(few_map_acc >= few_ml_acc, "{few_map_acc} vs {few_ml_acc}");
        assert!((many_map - many_ml).abs() < 0.01, "{many_map} vs {many_ml}");
        assert!((many_map_acc - many_ml_acc).abs() < 0.01);
        // No prior weight: maximum likelihood exactly.
        let zero = dawid_skene(
            &simulated(200, 4, 3, 0.5, 9),
            &DawidSkeneConfig {
                ordinal_prior: Some(0.0),
                ..DawidSkeneConfig::default()
            },
        )
        .expect("fit");
        let ml =
            dawid_skene(&simulated(200, 4, 3, 0.5, 9), &DawidSkeneConfig::default()).expect("fit");
        assert_eq!(zero, ml);
        assert!(
            dawid_skene(
                &simulated(20, 2, 3, 0.5, 1),
                &DawidSkeneConfig {
                    ordinal_prior: Some(f64::NAN),
                    ..DawidSkeneConfig::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn no_rating_is_undefined() {
        let ratings = Ratings::from_rows(&[vec![None, None]], 2).expect("ratings");
        assert!(dawid_skene(&ratings, &DawidSkeneConfig::default()).is_err());
    }
}
