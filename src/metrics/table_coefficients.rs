//! Two-rater agreement coefficients on a contingency table, with the variances of Gwet's
//! Handbook (irrCAC `table.CAC`): percent agreement, Brennan-Prediger, Cohen's kappa,
//! Scott's pi, Gwet's AC1/AC2 and Krippendorff's alpha.

use super::gwet::{AgreementCoefficient, AgreementWeights, t_interval};
use super::ratings::ContingencyTable;
use super::undefined::{Estimate, Undefined};

/// Which coefficient [`table_coefficient`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCoefficient {
    /// Weighted percent agreement `pa = sum_kl w_kl p_kl` (chance agreement 0).
    PercentAgreement,
    /// Brennan-Prediger: chance agreement `sum(w) / q^2`.
    BrennanPrediger,
    /// Cohen's kappa: chance agreement `sum_kl w_kl p_k. p_.l`.
    Cohen,
    /// Scott's pi: chance agreement `sum_kl w_kl pi_k pi_l`, `pi_k = (p_k. + p_.k) / 2`.
    Scott,
    /// Gwet's AC1 (identity weights) / AC2: `sum(w) / (q (q - 1)) * sum_k pi_k (1 - pi_k)`.
    Gwet,
    /// Krippendorff's alpha: Scott's chance agreement against
    /// `pa' = (1 - 1 / (2n)) pa + 1 / (2n)`.
    Krippendorff,
}

/// A two-rater coefficient from the table of rater 1 (rows) against rater 2 (columns).
///
/// The variance is Gwet's large-sample one with denominator n (the number of rated
/// pairs), no finite-population correction, e.g. for Cohen's kappa
/// `[sum_kl p_kl (w_kl - (1 - c)(w_k. + w_.l))^2 - (pa - 2 (1 - c) pe)^2] / (n (1 - pe)^2)`;
/// a variance negative by round-off counts as 0. The interval is
/// `c -/+ t(0.975; n - 1) se`, upper bound capped at 1. Krippendorff's variance is taken at
/// the uncorrected `(pa - pe) / (1 - pe)`, as irrCAC does, and its reported `pa` is `pa'`.
///
/// irrCAC builds the weights of a table from the ranks `1..q`, not from category values:
/// pass `AgreementWeights::Linear(&[1.0, 2.0, ...])` to match it.
///
/// Undefined for an empty table, fewer than two categories (Gwet's AC1/AC2) or a chance
/// agreement of 1; the standard error and interval are undefined with a single pair.
pub fn table_coefficient(
    table: &ContingencyTable,
    weights: AgreementWeights<'_>,
    coefficient: TableCoefficient,
) -> Estimate<AgreementCoefficient> {
    let q = table.n_categories();
    let weight = weights.matrix(q)?;
    let n_count = table.total();
    if n_count == 0 {
        return Err(Undefined::EmptyInput.into());
    }
    if coefficient == TableCoefficient::Gwet && q < 2 {
        return Err(Undefined::SingleValueDomain.into());
    }
    let n = n_count as f64;
    let w = |k: usize, l: usize| weight[k * q + l];
    let p = |k: usize, l: usize| table.get(k, l) as f64 / n;
    let cells = || (0..q).flat_map(|k| (0..q).map(move |l| (k, l)));
    let rows: Vec<f64> = table.row_sums().iter().map(|&c| c as f64 / n).collect();
    let columns: Vec<f64> = table.column_sums().iter().map(|&c| c as f64 / n).collect();
    let pooled: Vec<f64> = rows
        .iter()
        .zip(&columns)
        .map(|(r, c)| (r + c) / 2.0)
        .collect();
    let weight_sum: f64 = weight.iter().sum();
    let q_f = q as f64;

    let pa: f64 = cells().map(|(k, l)| w(k, l) * p(k, l)).sum();
    let pe = match coefficient {
        TableCoefficient::PercentAgreement => 0.0,
        TableCoefficient::BrennanPrediger => weight_sum / (q_f * q_f),
        TableCoefficient::Cohen => cells().map(|(k, l)| w(k, l) * rows[k] * columns[l]).sum(),
        TableCoefficient::Scott | TableCoefficient::Krippendorff => {
            cells().map(|(k, l)| w(k, l) * pooled[k] * pooled[l]).sum()
        }
        TableCoefficient::Gwet => {
            weight_sum / (q_f * (q_f - 1.0)) * pooled.iter().map(|pi| pi * (1.0 - pi)).sum::<f64>()
        }
    };
    if pe >= 1.0 {
        return Err(Undefined::ChanceAgreementIsOne.into());
    }
    let chance_corrected = (pa - pe) / (1.0 - pe);
    let (reported_pa, value) = if coefficient == TableCoefficient::Krippendorff {
        let epsilon = 1.0 / (2.0 * n);
        let corrected = (1.0 - epsilon) * pa + epsilon;
        (corrected, (corrected - pe) / (1.0 - pe))
    } else {
        (pa, chance_corrected)
    };

    // sum_kl p_kl (term_kl)^2 minus the square of its mean, over n (1 - pe)^2.
    let spread = |term: &dyn Fn(usize, usize) -> f64, mean: f64| {
        let squares: f64 = cells().map(|(k, l)| p(k, l) * term(k, l).powi(2)).sum();
        (squares - mean * mean) / (n * (1.0 - pe).powi(2))
    };
    let slack = 1.0 - chance_corrected;
    let centred_mean = pa - 2.0 * slack * pe;
    let variance = match coefficient {
        TableCoefficient::PercentAgreement | TableCoefficient::BrennanPrediger => {
            spread(&|k, l| w(k, l), pa)
        }
        TableCoefficient::Cohen => {
            let row_means: Vec<f64> = (0..q)
                .map(|k| (0..q).map(|l| w(k, l) * columns[l]).sum())
                .collect();
            let column_means: Vec<f64> = (0..q)
                .map(|l| (0..q).map(|k| w(k, l) * rows[k]).sum())
                .collect();
            spread(
                &|k, l| w(k, l) - slack * (row_means[k] + column_means[l]),
                centred_mean,
            )
        }
        TableCoefficient::Scott | TableCoefficient::Krippendorff => {
            let pooled_means: Vec<f64> = (0..q)
                .map(|k| (0..q).map(|l| (w(k, l) + w(l, k)) / 2.0 * pooled[l]).sum())
                .collect();
            spread(
                &|k, l| w(k, l) - slack * (pooled_means[k] + pooled_means[l]),
                centred_mean,
            )
        }
        TableCoefficient::Gwet => {
            let scale = weight_sum / (q_f * (q_f - 1.0));
            spread(
                &|k, l| w(k, l) - 2.0 * slack * scale * (1.0 - (pooled[k] + pooled[l]) / 2.0),
                centred_mean,
            )
        }
    };
    let n_subjects = usize::try_from(n_count).unwrap_or(usize::MAX);
    let (se, ci95) = t_interval(value, variance, n_subjects);
    Ok(AgreementCoefficient {
        coefficient: value,
        pa: reported_pa,
        pe,
        se,
        ci95,
        n_subjects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Weighting, cohen_kappa, percent_agreement, scott_pi};

    fn table(rows: &[&[u64]]) -> ContingencyTable {
        ContingencyTable::from_rows(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn coefficients_match_the_direct_definitions() {
        let t = table(&[&[20, 5], &[10, 15]]);
        let get = |c| table_coefficient(&t, AgreementWeights::Identity, c).unwrap();
        let cohen = get(TableCoefficient::Cohen);
        assert!((cohen.coefficient - 0.4).abs() < 1e-15);
        let wald = cohen_kappa(&t, Weighting::Unweighted).unwrap();
        // Gwet's variance of Cohen's kappa is algebraically the Fleiss-Cohen-Everitt one.
        assert!((cohen.se.clone().unwrap() - wald.std_kappa).abs() < 1e-14);
        assert!((get(TableCoefficient::Scott).coefficient - scott_pi(&t).unwrap()).abs() < 1e-15);
        let agreement = get(TableCoefficient::PercentAgreement);
        assert!((agreement.coefficient - percent_agreement(&t).unwrap()).abs() < 1e-15);
        assert_eq!(agreement.pe, 0.0);
        let bp = get(TableCoefficient::BrennanPrediger);
        assert!((bp.coefficient - 0.4).abs() < 1e-15);
        // Krippendorff's small-sample correction pulls pa towards 1.
        let alpha = get(TableCoefficient::Krippendorff);
        assert!(
            alpha.pa > agreement.pa && alpha.coefficient > get(TableCoefficient::Scott).coefficient
        );
        let ac1 = get(TableCoefficient::Gwet);
        let (low, high) = ac1.ci95.unwrap();
        assert!(low < ac1.coefficient && ac1.coefficient < high && high <= 1.0);
    }

    #[test]
    fn degenerate_tables_are_undefined() {
        let constant = table(&[&[10, 0], &[0, 0]]);
        for c in [
            TableCoefficient::Cohen,
            TableCoefficient::Scott,
            TableCoefficient::Krippendorff,
        ] {
            assert_eq!(
                table_coefficient(&constant, AgreementWeights::Identity, c)
                    .unwrap_err()
                    .undefined_reason(),
                Some(Undefined::ChanceAgreementIsOne)
            );
        }
        // Gwet's and Brennan-Prediger's chance terms do not depend on the margins.
        let ac1 = table_coefficient(
            &constant,
            AgreementWeights::Identity,
            TableCoefficient::Gwet,
        )
        .unwrap();
        assert_eq!(ac1.coefficient, 1.0);
        let single = table(&[&[4]]);
        assert_eq!(
            table_coefficient(&single, AgreementWeights::Identity, TableCoefficient::Gwet)
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::SingleValueDomain)
        );
        assert_eq!(
            table_coefficient(
                &single,
                AgreementWeights::Identity,
                TableCoefficient::BrennanPrediger
            )
            .unwrap_err()
            .undefined_reason(),
            Some(Undefined::ChanceAgreementIsOne)
        );
        assert_eq!(
            table_coefficient(
                &ContingencyTable::zeros(2),
                AgreementWeights::Identity,
                TableCoefficient::Cohen
            )
            .unwrap_err()
            .undefined_reason(),
            Some(Undefined::EmptyInput)
        );
        let one_pair = table(&[&[1, 0], &[0, 0]]);
        let lonely = table_coefficient(
            &one_pair,
            AgreementWeights::Identity,
            TableCoefficient::PercentAgreement,
        )
        .unwrap();
        assert_eq!(lonely.coefficient, 1.0);
        assert_eq!(
            lonely.se.unwrap_err().undefined_reason(),
            Some(Undefined::ZeroVariance)
        );
    }
}
