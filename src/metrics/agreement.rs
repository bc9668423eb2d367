//! Two-rater and multi-rater agreement: percent agreement, Cohen's kappa (weighted, with
//! Fleiss-Cohen-Everitt inference), Scott's pi, Fleiss' and Randolph's kappa.

use super::distributions::{normal_quantile, normal_survival};
use super::ratings::{ContingencyTable, SubjectCounts};
use super::undefined::{Estimate, Undefined};

/// Disagreement weights of Cohen's kappa, by category POSITION in the declared order
/// (as scikit-learn and statsmodels do), never by label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// 0 on the diagonal, 1 elsewhere.
    Unweighted,
    /// `|i - j|`.
    Linear,
    /// `(i - j)^2`.
    Quadratic,
}

impl Weighting {
    fn disagreement(self, i: usize, j: usize) -> f64 {
        let distance = i.abs_diff(j) as f64;
        match self {
            Weighting::Unweighted => f64::from(u8::from(i != j)),
            Weighting::Linear => distance,
            Weighting::Quadratic => distance * distance,
        }
    }
}

/// Cohen's kappa with its large-sample inference (statsmodels `cohens_kappa`, SAS PROC FREQ).
#[derive(Debug, Clone, PartialEq)]
pub struct CohenKappa {
    /// The coefficient `1 - sum d p_ij / sum d p_i. p_.j`.
    pub kappa: f64,
    /// Weighted observed agreement `sum w p_ij`, with `w = 1 - d / d_max`.
    pub observed_agreement: f64,
    /// Weighted chance agreement `sum w p_i. p_.j`.
    pub chance_agreement: f64,
    /// Fleiss-Cohen-Everitt (1969) variance, denominator n (negative round-off clamped to 0).
    pub var_kappa: f64,
    /// `sqrt(var_kappa)` (SAS "ASE").
    pub std_kappa: f64,
    /// Wald 95% interval `kappa -/+ 1.959964 std_kappa`, deliberately not clipped to [-1, 1].
    pub ci95: (f64, f64),
    /// Variance under H0: kappa = 0.
    pub var_kappa0: f64,
    /// `sqrt(var_kappa0)`.
    pub std_kappa0: f64,
    /// `kappa / std_kappa0`; undefined when `std_kappa0` is 0.
    pub z_value: Estimate,
    /// `P(Z > z)`.
    pub pvalue_one_sided: Estimate,
    /// `2 P(Z > |z|)`.
    pub pvalue_two_sided: Estimate,
    /// Largest kappa the margins allow, from the UNWEIGHTED chance agreement (as statsmodels).
    pub kappa_max: f64,
    /// Number of rated pairs.
    pub n: u64,
}

/// Share of pairs with identical ratings (scikit-learn `accuracy_score(y1, y2)`).
pub fn percent_agreement(table: &ContingencyTable) -> Estimate {
    let n = table.total();
    if n == 0 {
        return Err(Undefined::EmptyInput.into());
    }
    Ok(table.trace() as f64 / n as f64)
}

/// True when every pair falls in one single category for both raters (p_e = 1).
fn single_category(rows: &[u64], columns: &[u64], n: u64) -> bool {
    rows.iter().zip(columns).any(|(&r, &c)| r == n && c == n)
}

/// Cohen's kappa with the given weights and its inference.
///
/// Undefined when the table is empty or when both raters used one single
/// category (p_e = 1); see the module table in [`crate::metrics`].
// i and j index the k x k table and both margins at once; iterators would hide the algebra.
#[allow(clippy::needless_range_loop)]
pub fn cohen_kappa(table: &ContingencyTable, weighting: Weighting) -> Estimate<CohenKappa> {
    let k = table.n_categories();
    let n_count = table.total();
    if n_count == 0 {
        return Err(Undefined::EmptyInput.into());
    }
    let row_counts = table.row_sums();
    let column_counts = table.column_sums();
    if single_category(&row_counts, &column_counts, n_count) {
        return Err(Undefined::ChanceAgreementIsOne.into());
    }
    let n = n_count as f64;
    let rows: Vec<f64> = row_counts.iter().map(|&c| c as f64 / n).collect();
    let columns: Vec<f64> = column_counts.iter().map(|&c| c as f64 / n).collect();
    let probability = |i: usize, j: usize| table.get(i, j) as f64 / n;

    // scikit-learn's arithmetic: observed vs expected counts under the disagreement weights.
    let mut observed_disagreement = 0.0;
    let mut expected_disagreement = 0.0;
    for i in 0..k {
        for j in 0..k {
            let d = weighting.disagreement(i, j);
            observed_disagreement += d * table.get(i, j) as f64;
            expected_disagreement += d * (column_counts[i] as f64 * row_counts[j] as f64 / n);
        }
    }
    let kappa = 1.0 - observed_disagreement / expected_disagreement;

    // statsmodels' variance algebra on agreement weights w = 1 - d / d_max.
    let max_disagreement = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| weighting.disagreement(i, j))
        .fold(0.0, f64::max);
    let agreement_weight =
        |i: usize, j: usize| 1.0 - weighting.disagreement(i, j) / max_disagreement;
    let row_weight_means: Vec<f64> = (0..k)
        .map(|i| (0..k).map(|j| columns[j] * agreement_weight(i, j)).sum())
        .collect();
    let column_weight_means: Vec<f64> = (0..k)
        .map(|j| (0..k).map(|i| rows[i] * agreement_weight(i, j)).sum())
        .collect();
    let mut observed_agreement = 0.0;
    let mut chance_agreement = 0.0;
    for i in 0..k {
        for j in 0..k {
            observed_agreement += agreement_weight(i, j) * probability(i, j);
            chance_agreement += agreement_weight(i, j) * rows[i] * columns[j];
        }
    }
    let mut term_observed = 0.0;
    let mut term_null = 0.0;
    for i in 0..k {
        for j in 0..k {
            let w = agreement_weight(i, j);
            let margin_weight = row_weight_means[i] + column_weight_means[j];
            term_observed += probability(i, j) * (w - margin_weight * (1.0 - kappa)).powi(2);
            term_null += rows[i] * columns[j] * (w - margin_weight).powi(2);
        }
    }
    let scale = (1.0 - chance_agreement).powi(2) * n;
    let var_kappa =
        ((term_observed - (kappa - chance_agreement * (1.0 - kappa)).powi(2)) / scale).max(0.0);
    let var_kappa0 = ((term_null - chance_agreement.powi(2)) / scale).max(0.0);
    let std_kappa = var_kappa.sqrt();
    let std_kappa0 = var_kappa0.sqrt();
    let half_width = normal_quantile(0.975) * std_kappa;
    let z_value: Estimate = if std_kappa0 > 0.0 {
        Ok(kappa / std_kappa0)
    } else {
        Err(Undefined::ZeroVariance.into())
    };
    let pvalue_one_sided = z_value.clone().map(normal_survival);
    let pvalue_two_sided = z_value.clone().map(|z| 2.0 * normal_survival(z.abs()));

    let unweighted_chance: f64 = rows.iter().zip(&columns).map(|(r, c)| r * c).sum();
    let max_observed: f64 = rows.iter().zip(&columns).map(|(r, c)| r.min(*c)).sum();
    let kappa_max = (max_observed - unweighted_chance) / (1.0 - unweighted_chance);

    Ok(CohenKappa {
        kappa,
        observed_agreement,
        chance_agreement,
        var_kappa,
        std_kappa,
        ci95: (kappa - half_width, kappa + half_width),
        var_kappa0,
        std_kappa0,
        z_value,
        pvalue_one_sided,
        pvalue_two_sided,
        kappa_max,
        n: n_count,
    })
}

/// Scott's pi: chance agreement from the pooled margins, `sum ((p_k. + p_.k) / 2)^2`.
/// It equals Fleiss' kappa for two raters.
pub fn scott_pi(table: &ContingencyTable) -> Estimate {
    let n_count = table.total();
    if n_count == 0 {
        return Err(Undefined::EmptyInput.into());
    }
    let rows = table.row_sums();
    let columns = table.column_sums();
    if single_category(&rows, &columns, n_count) {
        return Err(Undefined::ChanceAgreementIsOne.into());
    }
    let n = n_count as f64;
    let observed = table.trace() as f64 / n;
    let chance: f64 = rows
        .iter()
        .zip(&columns)
        .map(|(&r, &c)| ((r as f64 / n + c as f64 / n) / 2.0).powi(2))
        .sum();
    Ok((observed - chance) / (1.0 - chance))
}

/// Mean share of agreeing rater pairs over subjects with at least two ratings,
/// `sum_k r_ik (r_ik - 1) / (r_i (r_i - 1))`; equals Fleiss' P-bar and Gwet's p_a.
pub fn pairwise_agreement(counts: &SubjectCounts) -> Estimate {
    let mut sum = 0.0;
    let mut pairable = 0usize;
    for row in counts.rows() {
        let m: u64 = row.iter().map(|&c| u64::from(c)).sum();
        if m < 2 {
            continue;
        }
        let agreeing: u64 = row
            .iter()
            .map(|&c| u64::from(c) * u64::from(c.saturating_sub(1)))
            .sum();
        sum += agreeing as f64 / (m * (m - 1)) as f64;
        pairable += 1;
    }
    if pairable == 0 {
        return Err(Undefined::NoPairableUnit.into());
    }
    Ok(sum / pairable as f64)
}

/// Share of subjects with at least two ratings whose ratings are all identical.
pub fn all_raters_agree(counts: &SubjectCounts) -> Estimate {
    let mut unanimous = 0usize;
    let mut pairable = 0usize;
    for row in counts.rows() {
        let m: u32 = row.iter().sum();
        if m < 2 {
            continue;
        }
        pairable += 1;
        if row.contains(&m) {
            unanimous += 1;
        }
    }
    if pairable == 0 {
        return Err(Undefined::NoPairableUnit.into());
    }
    Ok(unanimous as f64 / pairable as f64)
}

/// Fleiss-type kappa with its ingredients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleissKappa {
    /// `(P_bar - P_e) / (1 - P_e)`.
    pub kappa: f64,
    /// Mean per-subject agreement `P_i = (sum_j n_ij^2 - m) / (m (m - 1))`.
    pub p_bar: f64,
    /// Chance agreement: `sum_j p_j^2` (Fleiss) or `1 / q` (Randolph).
    pub p_e: f64,
}

/// Chance agreement model of a Fleiss-type kappa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChanceModel {
    Marginal,
    Uniform,
}

/// Fleiss' kappa (statsmodels `fleiss_kappa(method='fleiss')`).
///
/// Every subject must carry the same number m >= 2 of ratings; with missing
/// ratings use Krippendorff's alpha or Gwet's AC1, or keep complete subjects.
pub fn fleiss_kappa(counts: &SubjectCounts) -> Estimate<FleissKappa> {
    fleiss_type_kappa(counts, ChanceModel::Marginal)
}

/// Randolph's free-marginal kappa: Fleiss' P-bar with `P_e = 1 / q`, q = number of
/// declared categories (columns), so declaring an unused category changes it.
pub fn randolph_kappa(counts: &SubjectCounts) -> Estimate<FleissKappa> {
    fleiss_type_kappa(counts, ChanceModel::Uniform)
}

fn fleiss_type_kappa(counts: &SubjectCounts, model: ChanceModel) -> Estimate<FleissKappa> {
    let n_subjects = counts.n_subjects();
    if n_subjects == 0 {
        return Err(Undefined::EmptyInput.into());
    }
    let q = counts.n_categories();
    let mut raters_per_subject = None;
    let mut p_sum = 0.0;
    for row in counts.rows() {
        let m: u64 = row.iter().map(|&c| u64::from(c)).sum();
        match raters_per_subject {
            None => raters_per_subject = Some(m),
            Some(expected) if expected != m => {
                return Err(Undefined::UnequalRatingsPerSubject.into());
            }
            Some(_) => {}
        }
        let squares: u64 = row.iter().map(|&c| u64::from(c) * u64::from(c)).sum();
        p_sum += (squares - m) as f64;
    }
    let m = raters_per_subject.unwrap_or(0);
    if m < 2 {
        return Err(Undefined::NoPairableUnit.into());
    }
    let m_f = m as f64;
    let p_bar = p_sum / (m_f * (m_f - 1.0)) / n_subjects as f64;
    let totals = counts.category_totals();
    let n_total = (n_subjects as u64 * m) as f64;
    let p_e = match model {
        ChanceModel::Marginal => {
            if totals.iter().filter(|&&t| t > 0).count() <= 1 {
                return Err(Undefined::ChanceAgreementIsOne.into());
            }
            totals.iter().map(|&t| (t as f64 / n_total).powi(2)).sum()
        }
        ChanceModel::Uniform => {
            if q < 2 {
                return Err(Undefined::ChanceAgreementIsOne.into());
            }
            1.0 / q as f64
        }
    };
    Ok(FleissKappa {
        kappa: (p_bar - p_e) / (1.0 - p_e),
        p_bar,
        p_e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[&[u64]]) -> ContingencyTable {
        ContingencyTable::from_rows(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn wikipedia_example_gives_kappa_0_4() {
        let t = table(&[&[20, 5], &[10, 15]]);
        let k = cohen_kappa(&t, Weighting::Unweighted).unwrap();
        assert!((k.kappa - 0.4).abs() < 1e-15);
        assert!((percent_agreement(&t).unwrap() - 0.7).abs() < 1e-15);
        assert!(k.ci95.0 < 0.4 && k.ci95.1 > 0.4);
    }

    #[test]
    fn single_category_is_undefined_not_a_number() {
        let t = table(&[&[10, 0], &[0, 0]]);
        for weighting in [
            Weighting::Unweighted,
            Weighting::Linear,
            Weighting::Quadratic,
        ] {
            let err = cohen_kappa(&t, weighting).unwrap_err();
            assert_eq!(
                err.undefined_reason(),
                Some(Undefined::ChanceAgreementIsOne)
            );
        }
        assert_eq!(
            cohen_kappa(&ContingencyTable::zeros(3), Weighting::Unweighted)
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::EmptyInput)
        );
        let counts = SubjectCounts::from_rows(&[vec![3, 0], vec![3, 0]], 2).unwrap();
        assert!(fleiss_kappa(&counts).is_err());
        assert!((randolph_kappa(&counts).unwrap().kappa - 1.0).abs() < 1e-15);
    }

    #[test]
    fn fleiss_rejects_unequal_rater_counts() {
        let counts = SubjectCounts::from_rows(&[vec![2, 0], vec![1, 2]], 2).unwrap();
        assert_eq!(
            fleiss_kappa(&counts).unwrap_err().undefined_reason(),
            Some(Undefined::UnequalRatingsPerSubject)
        );
        assert!((pairwise_agreement(&counts).unwrap() - (1.0 + 1.0 / 3.0) / 2.0).abs() < 1e-15);
        assert!((all_raters_agree(&counts).unwrap() - 0.5).abs() < 1e-15);
    }
}
