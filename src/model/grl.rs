//! Gradient reversal: identity forward, gradient scaled by -alpha backward.

use tch::Tensor;

/// Identity in the forward pass; multiplies the incoming gradient by `-alpha`.
/// libtorch from Rust has no custom autograd functions, so the reversal comes from
/// `d + (x - d) * (-alpha)` with `d = x.detach()`: the value equals `x`, and only the
/// second term carries gradient.
pub fn grad_reverse(x: &Tensor, alpha: f64) -> Tensor {
    let detached = x.detach();
    &detached + (x - &detached) * (-alpha)
}

/// GRL factor schedule `2 / (1 + exp(-10 p)) - 1` for progress `p` in [0, 1].
pub fn grl_alpha(progress: f64) -> f64 {
    let p = progress.clamp(0.0, 1.0);
    2.0 / (1.0 + (-10.0 * p).exp()) - 1.0
}

/// The merged ClinicaDL code's factor for a whole 0-based epoch: `p = epoch / 10`, not
/// clamped (alpha keeps creeping towards 1 after epoch 10).
pub fn grl_alpha_for_epoch(epoch: usize) -> f64 {
    let p = epoch as f64 / 10.0;
    2.0 / (1.0 + (-10.0 * p).exp()) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn forward_is_identity_and_backward_is_reversed() {
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let y = grad_reverse(&x, 0.5);
        assert_eq!(Vec::<f32>::try_from(&y).unwrap(), vec![1.0, -2.0, 3.0]);
        (y * Tensor::from_slice(&[1.0f32, 2.0, 3.0]))
            .sum(Kind::Float)
            .backward();
        assert_eq!(
            Vec::<f32>::try_from(&x.grad()).unwrap(),
            vec![-0.5, -1.0, -1.5]
        );
    }

    #[test]
    fn alpha_schedule_goes_from_zero_to_almost_one() {
        assert_eq!(grl_alpha(0.0), 0.0);
        assert!((grl_alpha(1.0) - 0.999_909).abs() < 1e-5);
        assert!(grl_alpha(0.3) > grl_alpha(0.2));
    }

    #[test]
    fn per_epoch_alpha_follows_the_merged_code() {
        // 2 / (1 + exp(-epoch)) - 1 = tanh(epoch / 2).
        let values: Vec<f64> = (0..5).map(grl_alpha_for_epoch).collect();
        assert_eq!(values[0], 0.0);
        for (epoch, value) in values.iter().enumerate() {
            assert!((value - (epoch as f64 / 2.0).tanh()).abs() < 1e-12);
        }
        assert!((values[1] - 0.462_117).abs() < 1e-6);
        assert!((values[4] - 0.964_028).abs() < 1e-6);
        assert!(grl_alpha_for_epoch(15) > grl_alpha(1.0));
    }
}
