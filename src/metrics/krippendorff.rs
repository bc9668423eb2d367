//! Krippendorff's alpha (nominal, ordinal, interval, ratio) from per-subject category counts, missing ratings allowed.

use super::ratings::SubjectCounts;
use super::undefined::{Estimate, MetricError, Undefined};

/// Level of measurement, which fixes the distance between two categories.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level<'a> {
    /// Distance 1 between different categories.
    Nominal,
    /// Rank distance from the pooled (coincidence) marginals, in the declared
    /// order; a category nobody used does not change it.
    Ordinal,
    /// Squared difference of the numeric values, one value per declared category.
    Interval(&'a [f64]),
    /// `((v_c - v_k) / (v_c + v_k))^2`, 0 when both values are 0.
    Ratio(&'a [f64]),
}

/// Krippendorff's alpha, `1 - (n - 1) sum o_ck d_ck / sum n_c n_k d_ck`
/// (as the `krippendorff` Python package, units x raters input transposed).
///
/// Units with fewer than two ratings drop out. Undefined for a single-value
/// domain, when no unit has two ratings, or when the pooled ratings show no
/// variation (expected disagreement 0).
pub fn krippendorff_alpha(counts: &SubjectCounts, level: Level<'_>) -> Estimate {
    let q = counts.n_categories();
    if let Level::Interval(values) | Level::Ratio(values) = level {
        if values.len() != q {
            return Err(MetricError::invalid(
                "level",
                format!(
                    "{} numeric values for {q} declared categories",
                    values.len()
                ),
            ));
        }
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(MetricError::invalid(
                "level",
                format!("value of category {bad} is not finite"),
            ));
        }
    }
    if q < 2 {
        return Err(Undefined::SingleValueDomain.into());
    }
    let coincidences = coincidence_matrix(counts)?;
    let marginals: Vec<f64> = (0..q)
        .map(|c| coincidences[c * q..(c + 1) * q].iter().sum())
        .collect();
    let n: f64 = marginals.iter().sum();
    let distance = distance_matrix(level, &marginals);
    let mut observed = 0.0;
    let mut expected = 0.0;
    for c in 0..q {
        for k in 0..q {
            let d = distance[c * q + k];
            observed += coincidences[c * q + k] * d;
            expected += marginals[c] * marginals[k] * d;
        }
    }
    if expected == 0.0 {
        return Err(Undefined::NoExpectedDisagreement.into());
    }
    Ok(1.0 - observed / (expected / (n - 1.0)))
}

/// Coincidence matrix `o_ck = sum_u (n_uc n_uk - [c = k] n_uc) / (m_u - 1)` over units with m_u >= 2.
fn coincidence_matrix(counts: &SubjectCounts) -> Estimate<Vec<f64>> {
    let q = counts.n_categories();
    let mut coincidences = vec![0.0; q * q];
    let mut used = Vec::with_capacity(q);
    let mut pairable = false;
    for row in counts.rows() {
        let m: u32 = row.iter().sum();
        if m < 2 {
            continue;
        }
        pairable = true;
        used.clear();
        used.extend(
            row.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(k, c)| (k, f64::from(*c))),
        );
        let scale = 1.0 / f64::from(m - 1);
        for &(c, n_c) in &used {
            for &(k, n_k) in &used {
                let pairs = if c == k { n_c * (n_c - 1.0) } else { n_c * n_k };
                coincidences[c * q + k] += pairs * scale;
            }
        }
    }
    if !pairable {
        return Err(Undefined::NoPairableUnit.into());
    }
    Ok(coincidences)
}

fn distance_matrix(level: Level<'_>, marginals: &[f64]) -> Vec<f64> {
    let q = marginals.len();
    let mut distance = vec![0.0; q * q];
    for c in 0..q {
        for k in 0..q {
            distance[c * q + k] = match level {
                Level::Nominal => f64::from(u8::from(c != k)),
                Level::Ordinal => {
                    let (low, high) = (c.min(k), c.max(k));
                    let between: f64 = marginals[low..=high].iter().sum();
                    (between - (marginals[low] + marginals[high]) / 2.0).powi(2)
                }
                Level::Interval(values) => (values[c] - values[k]).powi(2),
                Level::Ratio(values) => {
                    let sum = values[c] + values[k];
                    if sum == 0.0 {
                        0.0
                    } else {
                        ((values[c] - values[k]) / sum).powi(2)
                    }
                }
            };
        }
    }
    distance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_example_of_krippendorff_2004() {
        // Jon/Han binary data: alpha = 0.095 (published).
        let pairs = [
            (1, 0),
            (1, 1),
            (0, 1),
            (0, 0),
            (0, 0),
            (0, 1),
            (0, 0),
            (0, 1),
            (0, 0),
            (0, 0),
        ];
        let rows: Vec<Vec<u32>> = pairs
            .iter()
            .map(|&(a, b)| {
                let mut row = vec![0u32; 2];
                row[a] += 1;
                row[b] += 1;
                row
            })
            .collect();
        let counts = SubjectCounts::from_rows(&rows, 2).unwrap();
        let alpha = krippendorff_alpha(&counts, Level::Nominal).unwrap();
        assert!((alpha - 0.095).abs() < 5e-4, "{alpha}");
    }

    #[test]
    fn degenerate_data_is_undefined() {
        let one_category = SubjectCounts::from_rows(&[vec![3], vec![3]], 1).unwrap();
        assert_eq!(
            krippendorff_alpha(&one_category, Level::Nominal)
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::SingleValueDomain)
        );
        let constant = SubjectCounts::from_rows(&[vec![3, 0], vec![3, 0]], 2).unwrap();
        assert_eq!(
            krippendorff_alpha(&constant, Level::Interval(&[0.0, 1.0]))
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::NoExpectedDisagreement)
        );
        let lonely = SubjectCounts::from_rows(&[vec![1, 0], vec![0, 1]], 2).unwrap();
        assert_eq!(
            krippendorff_alpha(&lonely, Level::Ordinal)
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::NoPairableUnit)
        );
        assert!(krippendorff_alpha(&constant, Level::Ratio(&[1.0])).is_err());
    }
}
