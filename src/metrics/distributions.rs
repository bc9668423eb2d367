//! Normal and Student t quantiles and tail probabilities used by the confidence intervals and tests.

use statrs::distribution::{Continuous, ContinuousCDF, Normal, StudentsT};
use statrs::function::gamma::ln_gamma;

/// Standard normal quantile `Phi^-1(probability)`.
pub(crate) fn normal_quantile(probability: f64) -> f64 {
    Normal::standard().inverse_cdf(probability)
}

/// Upper tail `P(Z > z)` of the standard normal, accurate far into the tail.
pub(crate) fn normal_survival(z: f64) -> f64 {
    Normal::standard().sf(z)
}

/// Quantile of Student's t with `freedom` degrees of freedom.
///
/// statrs gives the starting point; its CDF is only accurate to about 1e-9, so
/// the quantile is polished with Newton steps on a CDF computed from a
/// continued fraction of the incomplete beta function (about 1e-15).
pub(crate) fn student_t_quantile(probability: f64, freedom: f64) -> Option<f64> {
    let distribution = StudentsT::new(0.0, 1.0, freedom).ok()?;
    let mut x = distribution.inverse_cdf(probability);
    for _ in 0..4 {
        let density = distribution.pdf(x);
        if !(density.is_finite() && density > 0.0) {
            break;
        }
        let step = (student_t_cdf(x, freedom) - probability) / density;
        x -= step;
        if step.abs() <= 1e-16 * x.abs().max(1.0) {
            break;
        }
    }
    x.is_finite().then_some(x)
}

/// CDF of Student's t: `1 - I_{v/(v+t^2)}(v/2, 1/2) / 2` for t >= 0, mirrored below 0.
fn student_t_cdf(t: f64, freedom: f64) -> f64 {
    let x = freedom / (freedom + t * t);
    let tail = 0.5 * regularized_incomplete_beta(freedom / 2.0, 0.5, x);
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// Regularized incomplete beta `I_x(a, b)` by the modified Lentz continued fraction.
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let log_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        log_front.exp() * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - log_front.exp() * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        for coefficient in [
            even,
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + coefficient * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + coefficient / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_tabulated_values() {
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-14);
        // Checked against the closed-form CDF of t with odd degrees of freedom.
        for (freedom, expected) in [(9.0, 2.2621571627982036), (49.0, 2.009575237129146)] {
            let t = student_t_quantile(0.975, freedom).unwrap();
            assert!((t - expected).abs() < 1e-13, "t({freedom}) = {t}");
            assert!((student_t_cdf(t, freedom) - 0.975).abs() < 1e-15);
        }
        assert!((student_t_cdf(0.0, 5.0) - 0.5).abs() < 1e-16);
        assert!((normal_survival(0.0) - 0.5).abs() < 1e-16);
    }
}
