//! Conv5_FC3_SSDA: a shared 3D convolutional extractor and three fully connected heads
//! (source classes, target classes, domain) with gradient reversal before the domain head.

use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;
use tch::nn::{self, ModuleT};

use super::grl::grad_reverse;

const CHANNELS: [i64; 5] = [8, 16, 32, 64, 128];
const HIDDEN: [i64; 2] = [1300, 50];
/// BatchNorm epsilon (libtorch's and PyTorch's default), set explicitly because folding
/// needs it.
const BN_EPS: f64 = 1e-5;

/// Spatial size after one padded 2x2x2 max-pool: odd sizes gain one cell (padding at
/// the front or the end of the axis gives the same size).
fn pooled(size: i64) -> i64 {
    (size + 1) / 2
}

/// Where a 2x2x2 max-pool pads an axis of odd size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolPadding {
    /// A zero plane before the first one, as ClinicaDL's `PadMaxPool3d` does.
    Front,
    /// Ceil-mode pooling: the last window holds the last plane alone.
    #[default]
    End,
}

/// How the weights are drawn at the start of training (always from the run's seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightInit {
    /// PyTorch's defaults for Conv3d and Linear: weights and biases uniform in
    /// +-1/sqrt(fan_in).
    Pytorch,
    /// tch's defaults: weights uniform in +-sqrt(6/fan_in) (Kaiming, ReLU gain),
    /// convolution biases 0, linear biases uniform in +-1/sqrt(fan_in).
    #[default]
    KaimingRelu,
}

/// 2x2x2 max-pool with stride 2 padding odd axes as `padding` says. Inputs follow a ReLU
/// (non-negative), so a zero plane never wins a window it shares with real values.
fn pad_max_pool(x: Tensor, padding: PoolPadding) -> Tensor {
    match padding {
        PoolPadding::End => x.max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], true),
        PoolPadding::Front => {
            let size = x.size();
            let odd = |axis: usize| size.get(axis).map_or(0, |n| n % 2);
            let (d, h, w) = (odd(2), odd(3), odd(4));
            let x = if d + h + w > 0 {
                x.constant_pad_nd([w, 0, h, 0, d, 0])
            } else {
                x
            };
            x.max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], false)
        }
    }
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

/// Shape of a network: input grid, class counts of the heads, dropout and pooling.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkSpec {
    pub grid: [usize; 3],
    pub source_classes: usize,
    pub target_classes: usize,
    #[serde(default = "two")]
    pub domain_classes: usize,
    #[serde(default = "half")]
    pub dropout: f64,
    #[serde(default)]
    pub pool_padding: PoolPadding,
}

fn two() -> usize {
    2
}

/// The largest grid side and voxel count a network is built for: far past any
/// preset's (80 x 96 x 80 at 2 mm, 1 mm grids under 256), and small enough that
/// building the network never asks libtorch for more memory than a machine has.
const GRID_SIDE_MAX: usize = 512;
const GRID_VOXELS_MAX: usize = 1 << 25;
/// The most outputs a head may have.
const CLASSES_MAX: usize = 64;

impl NetworkSpec {
    /// What a network of this spec can be built from: a model card or a run's
    /// configuration holding other values is refused before libtorch allocates it.
    pub fn check(&self) -> Result<(), String> {
        let voxels = self.grid.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if self.grid.iter().any(|&d| d == 0 || d > GRID_SIDE_MAX)
            || voxels.is_none_or(|n| n > GRID_VOXELS_MAX)
        {
            return Err(format!(
                "grid {:?}: each side must be 1 to {GRID_SIDE_MAX} voxels, and the grid at \
                 most {GRID_VOXELS_MAX} voxels",
                self.grid
            ));
        }
        for (head, n) in [
            ("source", self.source_classes),
            ("target", self.target_classes),
            ("domain", self.domain_classes),
        ] {
            if n == 0 || n > CLASSES_MAX {
                return Err(format!(
                    "the {head} head has {n} outputs: 1 to {CLASSES_MAX} are allowed"
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

fn half() -> f64 {
    0.5
}

impl NetworkSpec {
    /// Two domain outputs, dropout 0.5, ceil-mode pooling.
    pub fn new(grid: [usize; 3], source_classes: usize, target_classes: usize) -> Self {
        Self {
            grid,
            source_classes,
            target_classes,
            domain_classes: two(),
            dropout: half(),
            pool_padding: PoolPadding::End,
        }
    }
}

/// Dropout masks drawn from the network's own seeded generator rather than libtorch's
/// global one, which every thread of the process shares.
#[derive(Debug)]
struct DropoutSource {
    rng: Mutex<ChaCha8Rng>,
}

impl DropoutSource {
    /// Inverted dropout: kept values scaled by 1/(1-p), as libtorch's dropout does.
    fn apply(&self, x: &Tensor, p: f64) -> Tensor {
        if p <= 0.0 {
            return x.shallow_clone();
        }
        let count = x.numel();
        let keep = (1.0 / (1.0 - p)) as f32;
        let mask: Vec<f32> = {
            let mut rng = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (0..count)
                .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
                .collect()
        };
        let mask = Tensor::from_slice(&mask)
            .view(x.size().as_slice())
            .to_kind(x.kind())
            .to_device(x.device());
        x * mask
    }
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

    fn forward_t(&self, features: &Tensor, dropout: Option<(&DropoutSource, f64)>) -> Tensor {
        let flat = features.flatten(1, -1);
        let flat = match dropout {
            Some((source, p)) => source.apply(&flat, p),
            None => flat,
        };
        flat.apply(&self.hidden1)
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
    dropout: DropoutSource,
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
            domain_head: Classifier::new(root / "domain_head", flat, spec.domain_classes as i64),
            spec: spec.clone(),
            dropout: DropoutSource {
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(0)),
            },
        }
    }

    /// Restarts the dropout masks' generator from `seed`.
    pub fn seed_dropout(&self, seed: u64) {
        *self
            .dropout
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Draws every weight and bias afresh from `rng`, layer by layer in a fixed order, so
    /// that the initial network depends on the seed alone; BatchNorm shifts start at 0,
    /// scales at 1 (PyTorch) or uniform in [0, 1) (tch).
    pub fn initialise(&self, init: WeightInit, rng: &mut ChaCha8Rng) {
        let _guard = tch::no_grad_guard();
        let fill = |var: &Tensor, bound: f64, rng: &mut ChaCha8Rng| {
            let values: Vec<f32> = (0..var.numel())
                .map(|_| {
                    if bound > 0.0 {
                        rng.random_range(-bound..bound) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let tensor = Tensor::from_slice(&values)
                .view(var.size().as_slice())
                .to_kind(var.kind())
                .to_device(var.device());
            var.shallow_clone().copy_(&tensor);
        };
        let fan_in = |weight: &Tensor| weight.size().iter().skip(1).product::<i64>().max(1) as f64;
        let weight_bound = |fan: f64| match init {
            WeightInit::Pytorch => 1.0 / fan.sqrt(),
            WeightInit::KaimingRelu => (6.0 / fan).sqrt(),
        };
        for block in &self.blocks {
            let fan = fan_in(&block.conv.ws);
            fill(&block.conv.ws, weight_bound(fan), rng);
            if let Some(bias) = &block.conv.bs {
                let bound = match init {
                    WeightInit::Pytorch => 1.0 / fan.sqrt(),
                    WeightInit::KaimingRelu => 0.0,
                };
                fill(bias, bound, rng);
            }
            if let Some(w) = &block.norm.ws {
                match init {
                    WeightInit::Pytorch => {
                        let _ = w.shallow_clone().fill_(1.0);
                    }
                    // tch draws BatchNorm scales uniformly in [0, 1).
                    WeightInit::KaimingRelu => {
                        let values: Vec<f32> =
                            (0..w.numel()).map(|_| rng.random_range(0.0..1.0)).collect();
                        let tensor = Tensor::from_slice(&values).to_device(w.device());
                        w.shallow_clone().copy_(&tensor);
                    }
                }
            }
            if let Some(b) = &block.norm.bs {
                let _ = b.shallow_clone().fill_(0.0);
            }
        }
        for head in [&self.source_head, &self.target_head, &self.domain_head] {
            for layer in [&head.hidden1, &head.hidden2, &head.output] {
                let fan = fan_in(&layer.ws);
                fill(&layer.ws, weight_bound(fan), rng);
                if let Some(bias) = &layer.bs {
                    fill(bias, 1.0 / fan.sqrt(), rng);
                }
            }
        }
    }

    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// Where the weights live.
    pub fn device(&self) -> tch::Device {
        self.blocks
            .first()
            .map_or(tch::Device::Cpu, |block| block.conv.ws.device())
    }

    /// Extractor output `[N, 128, d, h, w]` for input `[N, 1, D, H, W]`.
    pub fn features(&self, input: &Tensor, train: bool) -> Tensor {
        self.blocks.iter().fold(input.shallow_clone(), |x, block| {
            let x = x.apply(&block.conv).apply_t(&block.norm, train).relu();
            pad_max_pool(x, self.spec.pool_padding)
        })
    }

    /// Logits of one head from extractor features; the domain head sees the features
    /// through gradient reversal with factor `alpha`.
    pub fn head_logits(&self, features: &Tensor, head: Head, alpha: f64, train: bool) -> Tensor {
        let dropout = train.then_some((&self.dropout, self.spec.dropout));
        match head {
            Head::Source => self.source_head.forward_t(features, dropout),
            Head::Target => self.target_head.forward_t(features, dropout),
            Head::Domain => self
                .domain_head
                .forward_t(&grad_reverse(features, alpha), dropout),
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

    /// Re-estimates every BatchNorm's running mean and variance on `batches` of input
    /// `[N, 1, D, H, W]`, layer after layer (each layer's statistics are taken on the
    /// outputs of the layers before it, already re-estimated): adaptive batch
    /// normalisation (AdaBN, Li et al. 2016), which moves a network to a new domain with
    /// unlabelled images only. Weights and the BatchNorm scales and shifts are unchanged.
    /// Returns the images used; with none, nothing changes.
    pub fn adapt_batchnorm(&self, batches: &[Tensor]) -> usize {
        let _guard = tch::no_grad_guard();
        let images: i64 = batches.iter().map(|b| b.size()[0]).sum();
        if images == 0 {
            return 0;
        }
        for (layer, block) in self.blocks.iter().enumerate() {
            let mut sum: Option<Tensor> = None;
            let mut squares: Option<Tensor> = None;
            let mut count = 0i64;
            for batch in batches {
                let x = self.blocks[..layer]
                    .iter()
                    .fold(batch.shallow_clone(), |x, before| {
                        let x = x.apply(&before.conv).apply_t(&before.norm, false).relu();
                        pad_max_pool(x, self.spec.pool_padding)
                    });
                let y = x.apply(&block.conv).to_kind(tch::Kind::Double);
                let size = y.size();
                count += size[0] * size[2..].iter().product::<i64>();
                let dims: &[i64] = &[0, 2, 3, 4];
                let s = y.sum_dim_intlist(dims, false, tch::Kind::Double);
                let q = (&y * &y).sum_dim_intlist(dims, false, tch::Kind::Double);
                sum = Some(match sum {
                    Some(total) => total + s,
                    None => s,
                });
                squares = Some(match squares {
                    Some(total) => total + q,
                    None => q,
                });
            }
            let (Some(sum), Some(squares)) = (sum, squares) else {
                continue;
            };
            let n = count as f64;
            let mean = &sum / n;
            // The unbiased variance, as BatchNorm keeps it.
            let var = ((&squares / n) - &mean * &mean).clamp_min(0.0) * (n / (n - 1.0).max(1.0));
            let mut running_mean = block.norm.running_mean.shallow_clone();
            let mut running_var = block.norm.running_var.shallow_clone();
            running_mean.copy_(&mean.to_kind(running_mean.kind()));
            running_var.copy_(&var.to_kind(running_var.kind()));
        }
        images as usize
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
    pool_padding: PoolPadding,
}

impl FoldedExtractor {
    pub fn is_channels_last(&self) -> bool {
        self.channels_last
    }

    /// Extractor output `[N, 128, d, h, w]`, equal (to rounding) to
    /// `Conv5Fc3Ssda::features(input, false)`.
    pub fn features(&self, input: &Tensor) -> Tensor {
        let input = if self.channels_last {
            channels_last(input)
        } else {
            input.shallow_clone()
        };
        self.layers.iter().fold(input, |x, (weight, bias)| {
            let x = x
                .conv3d(weight, Some(bias), [1, 1, 1], [1, 1, 1], [1, 1, 1], 1)
                .relu_();
            pad_max_pool(x, self.pool_padding)
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
            pool_padding: self.spec.pool_padding,
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
        NetworkSpec::new([24, 24, 24], 3, 2)
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
    fn adapted_batchnorm_normalises_the_new_domain_layer_after_layer() {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Conv5Fc3Ssda::new(&vs.root(), &tiny());
        // A "new domain": brighter, higher-contrast inputs than any the defaults suit.
        let batches: Vec<Tensor> = (0..3)
            .map(|_| Tensor::rand([4, 1, 24, 24, 24], (Kind::Float, Device::Cpu)) * 3.0 + 2.0)
            .collect();
        let before = net.blocks[0].norm.running_mean.copy();
        assert_eq!(net.adapt_batchnorm(&batches), 12);
        assert_eq!(net.adapt_batchnorm(&[]), 0);
        let _guard = tch::no_grad_guard();
        let all = Tensor::cat(&batches, 0);
        // Every layer's running statistics are the per-channel mean and unbiased variance
        // of its convolution's outputs over all the adaptation images, the layers before
        // it normalised with their own new statistics.
        let mut x = all.shallow_clone();
        for block in &net.blocks {
            let y = x.apply(&block.conv).to_kind(Kind::Double);
            let dims: &[i64] = &[0, 2, 3, 4];
            let mean = y.mean_dim(dims, false, Kind::Double);
            let var = y.var_dim(dims, true, false);
            let mean_error = (mean - block.norm.running_mean.to_kind(Kind::Double))
                .abs()
                .max()
                .double_value(&[]);
            let var_error = (var / block.norm.running_var.to_kind(Kind::Double) - 1.0)
                .abs()
                .max()
                .double_value(&[]);
            assert!(mean_error < 1e-4, "mean off by {mean_error}");
            assert!(var_error < 1e-4, "variance off by a ratio of {var_error}");
            x = pad_max_pool(
                x.apply(&block.conv).apply_t(&block.norm, false).relu(),
                net.spec.pool_padding,
            );
        }
        assert!(
            (net.blocks[0].norm.running_mean.copy() - before)
                .abs()
                .max()
                .double_value(&[])
                > 0.1,
            "the statistics moved"
        );
    }

    #[test]
    fn folded_extractor_matches_the_eval_network() {
        tch::manual_seed(3);
        for padding in [PoolPadding::End, PoolPadding::Front] {
            folded_matches_with(padding);
        }
    }

    fn folded_matches_with(padding: PoolPadding) {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = NetworkSpec {
            pool_padding: padding,
            ..NetworkSpec::new([33, 32, 31], 3, 2)
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
    fn front_padding_pools_the_first_plane_alone() {
        // One axis of 3: front padding pools [0] and [1, 2]; end padding [0, 1] and [2].
        let x = Tensor::from_slice(&[5.0f32, 1.0, 3.0]).view([1, 1, 1, 1, 3]);
        let values = |padding| {
            Vec::<f32>::try_from(pad_max_pool(x.shallow_clone(), padding).flatten(0, -1)).unwrap()
        };
        assert_eq!(values(PoolPadding::Front), vec![5.0, 3.0]);
        assert_eq!(values(PoolPadding::End), vec![5.0, 3.0]);
        let y = Tensor::from_slice(&[1.0f32, 5.0, 3.0]).view([1, 1, 1, 1, 3]);
        let front = pad_max_pool(y.shallow_clone(), PoolPadding::Front);
        let end = pad_max_pool(y, PoolPadding::End);
        assert_eq!(
            Vec::<f32>::try_from(front.flatten(0, -1)).unwrap(),
            vec![1.0, 5.0]
        );
        assert_eq!(
            Vec::<f32>::try_from(end.flatten(0, -1)).unwrap(),
            vec![5.0, 3.0]
        );
        let cube = Tensor::ones([2, 4, 7, 6, 5], (Kind::Float, Device::Cpu));
        assert_eq!(
            pad_max_pool(cube, PoolPadding::Front).size(),
            vec![2, 4, 4, 3, 3]
        );
    }

    #[test]
    fn initialisation_and_dropout_depend_on_the_seed_alone() {
        let weights = |init: WeightInit, seed: u64| {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = Conv5Fc3Ssda::new(&vs.root(), &tiny());
            net.initialise(init, &mut ChaCha8Rng::seed_from_u64(seed));
            let conv = net.blocks[1].conv.ws.copy();
            let bias = net.blocks[1].conv.bs.as_ref().map(Tensor::copy);
            net.seed_dropout(seed);
            let features = Tensor::ones([2, 128, 1, 1, 1], (Kind::Float, Device::Cpu));
            let logits = net.head_logits(&features, Head::Source, 1.0, true);
            (conv, bias, logits)
        };
        let (a, a_bias, a_logits) = weights(WeightInit::Pytorch, 4);
        let (b, _, b_logits) = weights(WeightInit::Pytorch, 4);
        let (c, _, _) = weights(WeightInit::Pytorch, 5);
        assert!(a.equal(&b) && a_logits.equal(&b_logits));
        assert!(!a.equal(&c));
        // PyTorch's bound for a Conv3d(8, 16, 3): 1/sqrt(8 * 27).
        let bound = 1.0 / (8.0f64 * 27.0).sqrt();
        let max = a.abs().max().double_value(&[]);
        assert!(max <= bound && max > 0.9 * bound, "{max} vs {bound}");
        assert!(a_bias.unwrap().abs().max().double_value(&[]) > 0.0);
        let (k, k_bias, _) = weights(WeightInit::KaimingRelu, 4);
        let max = k.abs().max().double_value(&[]);
        assert!(max > 2.0 * bound, "{max}");
        assert_eq!(k_bias.unwrap().abs().max().double_value(&[]), 0.0);
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
                None => net.domain_head.forward_t(&leaf, None),
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
