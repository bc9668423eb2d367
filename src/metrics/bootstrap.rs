//! Seeded percentile bootstrap confidence intervals that resample subjects (rows) for any statistic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::undefined::{Estimate, MetricError, Undefined};

/// Settings of a percentile bootstrap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapConfig {
    /// Number of resamples.
    pub replicates: usize,
    /// Seed of the ChaCha8 generator: the same seed gives the same interval.
    pub seed: u64,
    /// Coverage of the interval, e.g. 0.95.
    pub confidence: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            replicates: 2000,
            seed: 0,
            confidence: 0.95,
        }
    }
}

/// Percentile interval and how many replicates it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapInterval {
    /// Lower percentile bound.
    pub lower: f64,
    /// Upper percentile bound.
    pub upper: f64,
    /// Replicates where the statistic was defined (the interval uses only these).
    pub defined_replicates: usize,
    /// Replicates skipped because the statistic was undefined in them.
    pub undefined_replicates: usize,
}

/// Percentile bootstrap of `statistic` over `n_subjects` subjects.
///
/// Each replicate draws `n_subjects` subject indices with replacement and passes
/// them to `statistic`, which computes the value on that resample (e.g. through
/// `Ratings::select_subjects`). Replicates where the statistic is undefined are
/// skipped and counted; an input error from the statistic aborts the bootstrap.
/// Quantiles interpolate linearly between order statistics (numpy's default).
pub fn bootstrap_percentile<F>(
    n_subjects: usize,
    config: &BootstrapConfig,
    mut statistic: F,
) -> Estimate<BootstrapInterval>
where
    F: FnMut(&[usize]) -> Estimate,
{
    if !(config.confidence > 0.0 && config.confidence < 1.0) {
        return Err(MetricError::invalid(
            "confidence",
            format!("{} is not strictly between 0 and 1", config.confidence),
        ));
    }
    if config.replicates == 0 {
        return Err(MetricError::invalid("replicates", "must be at least 1"));
    }
    if n_subjects == 0 {
        return Err(Undefined::EmptyInput.into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut resample = vec![0usize; n_subjects];
    let mut values = Vec::with_capacity(config.replicates);
    let mut undefined_replicates = 0;
    for _ in 0..config.replicates {
        for slot in resample.iter_mut() {
            *slot = rng.random_range(0..n_subjects);
        }
        match statistic(&resample) {
            Ok(value) if value.is_finite() => values.push(value),
            Ok(_) | Err(MetricError::Undefined(_)) => undefined_replicates += 1,
            Err(error @ MetricError::InvalidInput { .. }) => return Err(error),
        }
    }
    if values.is_empty() {
        return Err(Undefined::NoDefinedReplicate.into());
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - config.confidence) / 2.0;
    Ok(BootstrapInterval {
        lower: quantile(&values, tail),
        upper: quantile(&values, 1.0 - tail),
        defined_replicates: values.len(),
        undefined_replicates,
    })
}

/// Linear-interpolation quantile of sorted values.
fn quantile(sorted: &[f64], probability: f64) -> f64 {
    let position = probability * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_interval_and_undefined_replicates_are_counted() {
        let data: Vec<f64> = (0..50).map(f64::from).collect();
        let mean = |idx: &[usize]| -> Estimate {
            Ok(idx.iter().map(|&i| data[i]).sum::<f64>() / idx.len() as f64)
        };
        let config = BootstrapConfig {
            replicates: 500,
            seed: 7,
            confidence: 0.9,
        };
        let a = bootstrap_percentile(data.len(), &config, mean).unwrap();
        let b = bootstrap_percentile(data.len(), &config, mean).unwrap();
        assert_eq!(a, b);
        assert!(a.lower < 24.5 && a.upper > 24.5 && a.lower > 15.0 && a.upper < 34.0);
        let mut calls = 0;
        let flaky = bootstrap_percentile(data.len(), &config, |idx| {
            calls += 1;
            if calls % 2 == 0 {
                Err(Undefined::ZeroVariance.into())
            } else {
                mean(idx)
            }
        })
        .unwrap();
        assert_eq!(flaky.undefined_replicates, 250);
        assert_eq!(flaky.defined_replicates, 250);
        let none = bootstrap_percentile(3, &config, |_| Err(Undefined::EmptyInput.into()));
        assert_eq!(
            none.unwrap_err().undefined_reason(),
            Some(Undefined::NoDefinedReplicate)
        );
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.0), 1.0);
        assert_eq!(quantile(&[5.0], 0.975), 5.0);
    }
}
