//! Undefined results and input errors shared by every metric in `crate::metrics`.

use serde::Serialize;

/// Why a statistic has no value for the given data.
///
/// A metric never invents a number for degenerate data: it returns
/// [`MetricError::Undefined`] carrying one of these reasons, so report code can
/// print "undefined (reason)" instead of a misleading 0, 1 or NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Undefined {
    /// No subject, rating or sample to compute from.
    #[error("no data")]
    EmptyInput,
    /// Every rating falls in one single category, so chance agreement p_e is 1
    /// and the chance-corrected coefficient is 0/0.
    #[error("all ratings fall in a single category (chance agreement p_e = 1)")]
    ChanceAgreementIsOne,
    /// No subject carries at least two ratings, so no pair can be compared.
    #[error("no subject has two or more ratings")]
    NoPairableUnit,
    /// The declared category domain holds a single value.
    #[error("the category domain holds a single value")]
    SingleValueDomain,
    /// The pooled ratings show no variation at all under the chosen distance,
    /// so the expected disagreement is 0.
    #[error("the ratings show no variation (expected disagreement is 0)")]
    NoExpectedDisagreement,
    /// A rater gave no rating at all, so their own marginal distribution (Conger's kappa)
    /// does not exist.
    #[error("a rater rated no subject")]
    RaterWithoutRatings,
    /// Fleiss' kappa needs the same number of ratings for every subject.
    #[error("subjects carry different numbers of ratings")]
    UnequalRatingsPerSubject,
    /// A standard error, and thus a test statistic or interval, is 0 or cannot be estimated.
    #[error("the variance estimate is zero or not estimable")]
    ZeroVariance,
    /// A ratio whose denominator is 0 (precision without predictions, recall
    /// without positives, MCC with a constant prediction, ...).
    #[error("zero denominator: {0}")]
    ZeroDivision(&'static str),
    /// A class needed both as positive and as negative is missing.
    #[error("only one class present among the samples")]
    SingleClass,
    /// A bootstrap produced no replicate where the statistic is defined.
    #[error("the statistic is undefined in every bootstrap replicate")]
    NoDefinedReplicate,
}

/// Failure of a metric: either the statistic is undefined for this data, or the input is malformed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// The input is well formed but the statistic has no value for it.
    #[error("undefined: {0}")]
    Undefined(#[from] Undefined),
    /// The input is malformed (shape mismatch, category index out of range, ...).
    #[error("invalid input `{input}`: {problem}")]
    InvalidInput {
        /// Name of the offending argument.
        input: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl MetricError {
    /// The reason when the statistic is undefined, `None` for malformed input.
    pub fn undefined_reason(&self) -> Option<Undefined> {
        match self {
            MetricError::Undefined(reason) => Some(*reason),
            MetricError::InvalidInput { .. } => None,
        }
    }

    pub(crate) fn invalid(input: &'static str, problem: impl Into<String>) -> Self {
        MetricError::InvalidInput {
            input,
            problem: problem.into(),
        }
    }
}

/// A statistic, or the reason it has none.
pub type Estimate<T = f64> = Result<T, MetricError>;

/// Ratio `numerator / denominator`, undefined when the denominator is 0.
pub(crate) fn ratio(numerator: f64, denominator: f64, what: &'static str) -> Estimate {
    if denominator == 0.0 {
        Err(Undefined::ZeroDivision(what).into())
    } else {
        Ok(numerator / denominator)
    }
}
