//! Verified statistics of the project: classification metrics, inter-rater agreement and
//! bootstrap intervals, as pure functions on category indices (no I/O).
//!
//! Categories are always passed as indices `0..q` into a DECLARED order; weighted
//! kappas and ordinal alpha use these positions. Reference values from
//! scikit-learn 1.9.1, statsmodels 0.15.0, krippendorff 0.9.0 and irrCAC 0.4.4
//! are reproduced to 1e-9 relative (see `tests/it/metrics_reference.rs`).
//!
//! # What is here
//!
//! - Classification ([`ConfusionMatrix`], [`roc_auc`] and friends): accuracy, balanced
//!   accuracy, per-class sensitivity / specificity / precision / F1, macro F1, MCC, ROC AUC
//!   (binary, one-vs-rest, one-vs-one), scikit-learn semantics.
//! - Two raters: percent agreement, Cohen's kappa with the Fleiss-Cohen-Everitt inference
//!   (statsmodels / SAS), Scott's pi; on a contingency table, [`table_coefficient`] gives
//!   irrCAC's `table.CAC` family (percent agreement, Brennan-Prediger, Cohen, Scott, Gwet's
//!   AC1/AC2, Krippendorff) with Gwet's variances and t intervals.
//! - Any number of raters, missing ratings allowed: Fleiss' and Randolph's kappa,
//!   Krippendorff's alpha (nominal, ordinal, interval, ratio), and irrCAC's `raw.CAC` family
//!   with linearisation standard errors: Gwet's AC1/AC2, Brennan-Prediger, generalised
//!   Fleiss, Gwet's Krippendorff estimator and Conger's kappa ([`conger_kappa`]).
//! - [`AgreementWeights`]: identity, linear, quadratic and bipolar weights from category
//!   values, as irrCAC defines them.
//! - A seeded percentile bootstrap over subjects.
//! - Calibration: temperature scaling, expected calibration error, thresholds for a
//!   target sensitivity or specificity.
//! - Latent truth from noisy raters: [`dawid_skene`] (EM, crowd-kit's algorithm and
//!   stopping rule, checked against it to 1e-6).
//!
//! # Undefined results
//!
//! No metric panics or invents a number. Every fallible result is an
//! [`Estimate`] (`Result<T, MetricError>`); degenerate data give
//! `Err(MetricError::Undefined(reason))`, malformed input (a category index
//! outside the declared categories, ragged rows, length mismatches) gives
//! `Err(MetricError::InvalidInput { .. })` naming the argument.
//!
//! | situation | metrics | result | reference libraries |
//! |---|---|---|---|
//! | no pair / sample / subject | all | `Undefined::EmptyInput` | NaN or exception |
//! | all ratings in one category (p_e = 1) | Cohen's kappa (all weights), Scott's pi, Fleiss' kappa | `Undefined::ChanceAgreementIsOne` | sklearn / statsmodels NaN; sklearn `replace_undefined_by` picks a number |
//! | one declared category (q = 1), or p_e = 1 | Randolph's kappa, Brennan-Prediger, generalised Fleiss, Gwet's Krippendorff estimator, Conger's kappa; table Cohen, Scott, Krippendorff, Brennan-Prediger | `Undefined::ChanceAgreementIsOne` | statsmodels NaN; irrCAC hard-codes 1.0, raises, or gives NaN (Conger) |
//! | one declared category (q = 1) | Gwet's AC1/AC2 (ratings or table), Krippendorff's alpha | `Undefined::SingleValueDomain` | irrCAC hard-codes 1.0; krippendorff raises `ValueError` |
//! | no variation under the distance | Krippendorff's alpha | `Undefined::NoExpectedDisagreement` | krippendorff NaN |
//! | no subject with two ratings (or a single rater) | pairwise agreement, Fleiss, alpha, AC1, Conger | `Undefined::NoPairableUnit` | krippendorff `ValueError` |
//! | a rater who rated no subject | Conger's kappa (needs every rater's marginals) | `Undefined::RaterWithoutRatings` | irrCAC NaN |
//! | subjects with different numbers of ratings | Fleiss' / Randolph's kappa | `Undefined::UnequalRatingsPerSubject` | statsmodels `AssertionError` |
//! | null variance is 0 | Cohen z and p-values | `Undefined::ZeroVariance` | statsmodels inf / NaN |
//! | a single rated subject (a single pair for tables) | standard error and t interval of the irrCAC coefficients (raw, table, Conger) | `Undefined::ZeroVariance` | irrCAC NaN |
//! | zero denominator | per-class precision / recall / specificity / F1, MCC | `Undefined::ZeroDivision(what)` | sklearn 0.0 (`zero_division`), MCC 0.0 |
//! | class absent as positive or negative | ROC AUC | `Undefined::SingleClass` | sklearn `ValueError` |
//! | one class in the truth | adjusted balanced accuracy | `Undefined::SingleClass` | sklearn division by zero |
//! | no defined replicate | bootstrap | `Undefined::NoDefinedReplicate` | - |
//!
//! Round-off: variances that come out negative by round-off (statsmodels can
//! report -3e-16) are clamped to 0, so standard errors are never NaN; an exact
//! zero standard error is reported as 0 (irrCAC prints 1e-15).
//!
//! irrCAC's `table.CAC.scott()` prints `pe = 0`; [`table_coefficient`] reports Scott's
//! actual chance agreement, the one its coefficient is computed from.
//!
//! scikit-learn parity for reports: `estimate.unwrap_or(0.0)` reproduces its
//! default `zero_division` for per-class metrics and its MCC of 0.0;
//! [`ZeroDivision::Exclude`] reproduces `zero_division=np.nan` in macro F1.

mod agreement;
mod bootstrap;
mod calibration;
mod classification;
mod conger;
mod dawid_skene;
mod distributions;
mod gwet;
mod krippendorff;
mod ratings;
mod table_coefficients;
mod undefined;

pub use agreement::{
    CohenKappa, FleissKappa, Weighting, all_raters_agree, cohen_kappa, fleiss_kappa,
    pairwise_agreement, percent_agreement, randolph_kappa, scott_pi,
};
pub use bootstrap::{BootstrapConfig, BootstrapInterval, bootstrap_percentile};
pub use calibration::{
    OperatingTarget, TEMPERATURE_RANGE, Temperature, TriageBand, TriageDecision, apply_temperature,
    expected_calibration_error, fit_temperature, rates_at, temperature_at_bound, threshold_for,
};
pub use classification::{
    ClassMetrics, ConfusionMatrix, OneVsRestAuc, RocCurve, ZeroDivision, roc_auc,
    roc_auc_one_vs_one_macro, roc_auc_one_vs_rest, roc_curve,
};
pub use conger::conger_kappa;
pub use dawid_skene::{DawidSkene, DawidSkeneConfig, dawid_skene};
pub use gwet::{
    AgreementCoefficient, AgreementWeights, brennan_prediger, fleiss_kappa_generalized, gwet_ac1,
    gwet_ac2, krippendorff_alpha_inference, krippendorff_observed_agreement,
};
pub use krippendorff::{Level, krippendorff_alpha};
pub use ratings::{ContingencyTable, Ratings, SubjectCounts};
pub use table_coefficients::{TableCoefficient, table_coefficient};
pub use undefined::{Estimate, MetricError, Undefined};
