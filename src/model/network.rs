//! Conv5_FC3_SSDA: a shared 3D convolutional extractor and three fully connected heads
//! (source classes, target classes, domain) with gradient reversal before the domain head.

use tch::Tensor;
use tch::nn::{self, ModuleT};

use super::grl::grad_reverse;

const CHANNELS: [i64; 5] = [8, 16, 32, 64, 128];
const HIDDEN: [i64; 2] = [1300, 50];
/// BatchNorm epsilon (libtorch's and PyTorch's default), set explicitly because folding
/// needs it.
const BN_EPS: f64 = 1e-5;

/// Spatial size after one 2x2x2 max-pool in ceil mode (ClinicaDL's padded max-pool).
fn pooled(size: i64) -> i64 {
    (size + 1) / 2
}

/// Features entering each head for an input grid `[D, H, W]`.
pub fn flatten_size(grid: [usize; 3]) -> i64 {
    let cells: i64 = grid
        .iter()
        .map(|&size| (0..CHANNELS.len()).fold(size as i64, |s, _| pooled(s)))
        .product();
    CHANNELS[CHANNELS.len() - 1] * cells
}

/// Which classifier produces the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Head {
    Source,
    Target,
    Domain,
}

/// Shape of a network: input grid and class counts of the two task heads.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkSpec {
    pub grid: [usize; 3],
    pub source_classes: usize,
    pub target_classes: usize,
}

#[derive(Debug)]
struct ConvBlock {
    conv: nn::Conv3D,
    norm: nn::BatchNorm,
}

#[derive(Debug)]
struct Classifier {
    hidden1: nn::Linear,
    hidden2: nn::Linear,
    output: nn::Linear,
}

impl Classifier {
    fn new(path: nn::Path, inputs: i64, classes: i64) -> Self {
        Self {
            hidden1: nn::linear(&path / "fc1", inputs, HIDDEN[0], Default::default()),
            hidden2: nn::linear(&path / "fc2", HIDDEN[0], HIDDEN[1], Default::default()),
            output: nn::linear(&path / "fc3", HIDDEN[1], classes, Default::default()),
        }
    }

    fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        features
            .flatten(1, -1)
            .dropout(0.5, train)
            .apply(&self.hidden1)
            .relu()
            .apply(&self.hidden2)
            .relu()
            .apply(&self.output)
    }
}

/// The network. Variables live under "extractor", "source_head", "target_head" and
/// "domain_head" in the `VarStore`.
#[derive(Debug)]
pub struct Conv5Fc3Ssda {
    blocks: Vec<ConvBlock>,
    source_head: Classifier,
    target_head: Classifier,
    domain_head: Classifier,
    spec: NetworkSpec,
}

/// Logits of the three heads for one batch.
pub struct HeadOutputs {
    pub source: Tensor,
    pub target: Tensor,
    pub domain: Tensor,
}

impl Conv5Fc3Ssda {
    pub fn new(root: &nn::Path, spec: &NetworkSpec) -> Self {
        let extractor = root / "extractor";
        let mut inputs = 1;
        let blocks = CHANNELS
            .iter()
            .enumerate()
            .map(|(index, &outputs)| {
                let conv_config = nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                };
                let block = ConvBlock {
                    conv: nn::conv3d(
                        &extractor / format!("conv{index}"),
                        inputs,
                        outputs,
                        3,
                        conv_config,
                    ),
                    norm: nn::batch_norm3d(
                        &extractor / format!("bn{index}"),
                        outputs,
                        nn::BatchNormConfig {
                            eps: BN_EPS,
                            ..Default::default()
                        },
                    ),
                };
                inputs = outputs;
                block
            })
            .collect();
        let flat = flatten_size(spec.grid);
        Self {
            blocks,
            source_head: Classifier::new(root / "source_head", flat, spec.source_classes as i64),
            target_head: Classifier::new(root / "target_head", flat, spec.target_classes as i64),
            domain_head: Classifier::new(root / "domain_head", flat, 2),
            spec: spec.clone(),
        }
    }

    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// Extractor output `[N, 128, d, h, w]` for input `[N, 1, D, H, W]`.
    pub fn features(&self, input: &Tensor, train: bool) -> Tensor {
        self.blocks.iter().fold(input.shallow_clone(), |x, block| {
            x.apply(&block.conv)
                .apply_t(&block.norm, train)
                .relu()
                .max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], true)
        })
    }

    /// Logits of one head from extractor features; the domain head sees the features
    /// through gradient reversal with factor `alpha`.
    pub fn head_logits(&self, features: &Tensor, head: Head, alpha: f64, train: bool) -> Tensor {
        match head {
            Head::Source => self.source_head.forward_t(features, train),
            Head::Target => self.target_head.forward_t(features, train),
            Head::Domain => self
                .domain_head
                .forward_t(&grad_reverse(features, alpha), train),
        }
    }

    /// All three heads on one batch.
    pub fn forward_all(&self, input: &Tensor, alpha: f64, train: bool) -> HeadOutputs {
        let features = self.features(input, train);
        HeadOutputs {
            source: self.head_logits(&features, Head::Source, alpha, train),
            target: self.head_logits(&features, Head::Target, alpha, train),
            domain: self.head_logits(&features, Head::Domain, alpha, train),
        }
    }

    /// Logits of one head for input `[N, 1, D, H, W]`.
    pub fn forward_head(&self, input: &Tensor, head: Head, train: bool) -> Tensor {
        let features = self.features(input, train);
        self.head_logits(&features, head, 1.0, train)
    }
}

/// `[N, C, D, H, W]` values copied into channels-last 3D memory order, with exactly the
/// strides of PyTorch's `torch.channels_last_3d` (also for `C = 1`, where a permuted
/// `contiguous()` keeps the default strides and libtorch then picks the default layout);
/// shape and values are unchanged.
fn channels_last(tensor: &Tensor) -> Tensor {
    let size = tensor.size();
    let [_, c, d, h, w] = size[..] else {
        return tensor.shallow_clone();
    };
    let strides = [c * d * h * w, 1, h * w * c, w * c, c];
    let mut out = Tensor::empty_strided(&size, strides, (tensor.kind(), tensor.device()));
    out.copy_(tensor);
    out
}

/// The extractor prepared for inference: each BatchNorm's running statistics and affine
/// parameters folded into the preceding convolution (`w' = w * s`, `b' = (b - mean) * s +
/// beta` with `s = gamma / sqrt(var + eps)`), optionally in channels-last 3D layout, which
/// libtorch's CPU convolutions (oneDNN) run faster. Eval mode only: a snapshot of the
/// weights when it was built.
#[derive(Debug)]
pub struct FoldedExtractor {
    layers: Vec<(Tensor, Tensor)>,
    channels_last: bool,
}

impl FoldedExtractor {
    /// Extractor output `[N, 128, d, h, w]`, equal (to rounding) to
    /// `Conv5Fc3Ssda::features(input, false)`.
    pub fn features(&self, input: &Tensor) -> Tensor {
        let input = if self.channels_last {
            channels_last(input)
        } else {
            input.shallow_clone()
        };
        self.layers.iter().fold(input, |x, (weight, bias)| {
            x.conv3d(weight, Some(bias), [1, 1, 1], [1, 1, 1], [1, 1, 1], 1)
                .relu_()
                .max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], true)
        })
    }
}

impl Conv5Fc3Ssda {
    /// The current weights as a `FoldedExtractor` (see there); `channels_last` picks the
    /// memory layout of weights and activations.
    pub fn folded_extractor(&self, channels_last_layout: bool) -> FoldedExtractor {
        let _guard = tch::no_grad_guard();
        let layers = self
            .blocks
            .iter()
            .map(|block| {
                let norm = &block.norm;
                let outputs = norm.running_mean.size()[0];
                let device = norm.running_mean.device();
                let ones = || Tensor::ones([outputs], (tch::Kind::Float, device));
                let zeros = || Tensor::zeros([outputs], (tch::Kind::Float, device));
                let gamma = norm.ws.as_ref().map_or_else(ones, Tensor::copy);
                let beta = norm.bs.as_ref().map_or_else(zeros, Tensor::copy);
                let scale = gamma / (&norm.running_var + BN_EPS).sqrt();
                let weight = &block.conv.ws * scale.view([-1, 1, 1, 1, 1]);
                let conv_bias = block.conv.bs.as_ref().map_or_else(zeros, Tensor::copy);
                let bias = (conv_bias - &norm.running_mean) * &scale + beta;
                let weight = if channels_last_layout {
                    channels_last(&weight)
                } else {
                    weight.contiguous()
                };
                (weight, bias.contiguous())
            })
            .collect();
        FoldedExtractor {
            layers,
            channels_last: channels_last_layout,
        }
    }
}

/// The default forward pass predicts with the target head, as the method does for
/// target images.
impl ModuleT for Conv5Fc3Ssda {
    fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        self.forward_head(input, Head::Target, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn tiny() -> NetworkSpec {
        NetworkSpec {
            grid: [24, 24, 24],
            source_classes: 3,
            target_classes: 2,
        }
    }

    #[test]
    fn output_shapes_and_variable_namespaces() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Conv5Fc3Ssda::new(&vs.root(), &tiny());
        let input = Tensor::rand([2, 1, 24, 24, 24], (Kind::Float, Device::Cpu));
        let out = net.forward_all(&input, 0.5, false);
        assert_eq!(out.source.size(), vec![2, 3]);
        assert_eq!(out.target.size(), vec![2, 2]);
        assert_eq!(out.domain.size(), vec![2, 2]);
        let names: Vec<String> = vs.variables().into_keys().collect();
        for prefix in ["extractor.", "source_head.", "target_head.", "domain_head."] {
            assert!(
                names.iter().any(|n| n.starts_with(prefix)),
                "{prefix} in {names:?}"
            );
        }
        assert!(names.contains(&"extractor.bn4.running_mean".to_string()));
    }

    #[test]
    fn folded_extractor_matches_the_eval_network() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = NetworkSpec {
            grid: [33, 32, 31],
            source_classes: 3,
            target_classes: 2,
        };
        let net = Conv5Fc3Ssda::new(&vs.root(), &spec);
        // Non-trivial BatchNorm parameters and running statistics.
        tch::no_grad(|| {
            for block in &net.blocks {
                let norm = &block.norm;
                let n = norm.running_mean.size()[0];
                let uniform = |low: f64, high: f64| {
                    Tensor::rand([n], (Kind::Float, Device::Cpu)) * (high - low) + low
                };
                norm.running_mean.shallow_clone().copy_(&uniform(-0.5, 0.5));
                norm.running_var.shallow_clone().copy_(&uniform(0.2, 3.0));
                if let (Some(w), Some(b)) = (&norm.ws, &norm.bs) {
                    w.shallow_clone().copy_(&uniform(0.5, 1.5));
                    b.shallow_clone().copy_(&uniform(-0.3, 0.3));
                }
            }
        });
        let input = Tensor::rand([3, 1, 33, 32, 31], (Kind::Float, Device::Cpu));
        let _guard = tch::no_grad_guard();
        let plain = net.features(&input, false);
        for layout in [false, true] {
            let folded = net.folded_extractor(layout).features(&input);
            assert_eq!(folded.size(), plain.size());
            let scale = plain.abs().max().double_value(&[]).max(1.0);
            let diff = (&folded - &plain).abs().max().double_value(&[]) / scale;
            assert!(
                diff < 1e-5,
                "channels-last {layout}: relative difference {diff}"
            );
            // Logits to 1e-5 relative to their largest magnitude, probabilities to 1e-5.
            let logits = net.head_logits(&folded, Head::Target, 1.0, false);
            let expected = net.forward_head(&input, Head::Target, false);
            let scale = expected.abs().max().double_value(&[]).max(1.0);
            let diff = (&logits - &expected).abs().max().double_value(&[]) / scale;
            assert!(
                diff < 1e-5,
                "channels-last {layout}: logits differ by {diff} x {scale}"
            );
            let diff = (logits.softmax(-1, Kind::Float) - expected.softmax(-1, Kind::Float))
                .abs()
                .max()
                .double_value(&[]);
            assert!(
                diff < 1e-5,
                "channels-last {layout}: probabilities differ by {diff}"
            );
        }
    }

    #[test]
    fn flatten_size_uses_ceil_pooling() {
        assert_eq!(flatten_size([24, 24, 24]), 128);
        assert_eq!(flatten_size([33, 32, 31]), 128 * 2);
    }

    #[test]
    fn domain_gradient_at_extractor_output_is_reversed_and_scaled() {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Conv5Fc3Ssda::new(&vs.root(), &tiny());
        let features = Tensor::rand([2, 128, 1, 1, 1], (Kind::Float, Device::Cpu));
        let gradient = |reverse: Option<f64>| {
            let leaf = features.copy().set_requires_grad(true);
            let logits = match reverse {
                Some(alpha) => net.head_logits(&leaf, Head::Domain, alpha, false),
                None => net.domain_head.forward_t(&leaf, false),
            };
            logits
                .cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 1]))
                .backward();
            leaf.grad()
        };
        let plain = gradient(None);
        let alpha = 0.3;
        let reversed = gradient(Some(alpha));
        assert!(plain.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        let expected = &plain * (-alpha);
        let diff = (&reversed - &expected).abs().max().double_value(&[]);
        assert!(diff < 1e-7, "max difference {diff}");
        let dot = (&reversed * &plain).sum(Kind::Float).double_value(&[]);
        assert!(dot < 0.0);
    }
}
