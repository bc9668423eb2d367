//! Inference: trained weights or a TorchScript model applied to streamed items, one
//! result per item (probabilities and label, or the reason the item failed).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use super::ModelError;
use super::data::{Item, ItemLoader};
use super::network::{Conv5Fc3Ssda, FoldedExtractor, Head, NetworkSpec};
use super::pipeline::{LoaderPool, ThreadSplit};
use super::preset::Preset;
use super::train::{BEST_WEIGHTS, CheckpointState};
use crate::imaging::preprocess::TensorCache;

/// The largest weights file read for its checks (the shipped networks hold a few MB).
const WEIGHTS_MAX_BYTES: u64 = 4 << 30;

/// A weights file must be a regular file (a FIFO under the name held `infer`, and the
/// store with it, forever); in the safetensors format, every tensor must hold finite
/// 32-bit floats, as the network's parameters are: an integer tensor crashed libtorch's
/// copy, and NaN weights (a diverged training) labelled every image without a
/// probability.
fn check_weights_file(weights: &Path) -> Result<(), ModelError> {
    let refused = |detail: String| ModelError::File {
        path: weights.to_path_buf(),
        detail,
    };
    let (mut file, size) =
        crate::imaging::nifti::open_regular(weights).map_err(|e| refused(e.reason()))?;
    if weights.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Ok(());
    }
    if size > WEIGHTS_MAX_BYTES {
        return Err(refused(format!(
            "{size} bytes: more than the {} GiB a network's weights may hold",
            WEIGHTS_MAX_BYTES >> 30
        )));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| refused(format!("cannot read it: {e}")))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| refused(format!("not a safetensors file: {e:?}")))?;
    for (name, view) in tensors.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(refused(format!(
                "tensor {name} is stored as {:?}; the network's weights are 32-bit floats (F32)",
                view.dtype()
            )));
        }
        let finite = view
            .data()
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
        if !finite {
            return Err(refused(format!(
                "tensor {name} holds NaN or infinite values (a training that diverged?): \
                 no prediction could be trusted"
            )));
        }
    }
    Ok(())
}

/// Class probabilities of one item and the most probable class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub probs: Vec<f32>,
    pub label: usize,
    /// The domain head's probability that the image comes from the target domain, for
    /// a network trained with its domain head (SSDA).
    #[serde(default)]
    pub domain_target: Option<f32>,
}

impl Prediction {
    /// The stored row of a prediction result, labels named in `classes` order. An image
    /// that does not register to the template is, for a task with a `reject` class, a
    /// reject (all its probability there) with the registration's message as its reason:
    /// "not a proper 3D brain image" is what a rater rejects, and the network never saw
    /// it. For other tasks it stays a failure, as an unreadable file does.
    pub fn row(
        result: &Result<Prediction, PredictionError>,
        image_id: i64,
        task: &str,
        classes: &[&str],
    ) -> crate::store::runs::PredictionRow {
        let mut row = crate::store::runs::PredictionRow {
            image_id,
            task: task.to_string(),
            label: None,
            probabilities: None,
            error: None,
            domain_target: None,
            reason: None,
        };
        match result {
            Ok(p) => {
                row.label = classes.get(p.label).map(|s| s.to_string());
                row.probabilities = Some(p.probs.iter().map(|&x| f64::from(x)).collect());
                row.domain_target = p.domain_target.map(f64::from);
            }
            Err(e) => match classes.iter().position(|&c| c == REJECT_CLASS) {
                Some(reject) if e.not_registered => {
                    let mut probabilities = vec![0.0; classes.len()];
                    probabilities[reject] = 1.0;
                    row.label = Some(REJECT_CLASS.to_string());
                    row.probabilities = Some(probabilities);
                    row.reason = Some(e.error.clone());
                }
                _ => row.error = Some(e.error.clone()),
            },
        }
        row
    }
}

/// The class an image that does not register is stored as, in tasks that have it.
pub const REJECT_CLASS: &str = "reject";

/// An item that could not be predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionError {
    pub id: String,
    pub error: String,
    /// The image was read but does not register to the preset's template
    /// ([`super::data::LoadFailure::NotRegistered`]).
    #[serde(default)]
    pub not_registered: bool,
}

/// Anything that maps an input batch `[N, 1, D, H, W]` to logits `[N, K]`.
pub trait LogitsModel {
    fn preset(&self) -> &Preset;
    fn device(&self) -> Device;
    fn logits(&self, input: &Tensor) -> Result<Tensor, ModelError>;
    /// Logits `[N, K]` and, from the same features, the domain head's logits `[N, 2]`
    /// (source, target) when the network was trained with it.
    fn logits_and_domain(&self, input: &Tensor) -> Result<(Tensor, Option<Tensor>), ModelError> {
        Ok((self.logits(input)?, None))
    }
}

/// Batch size, loader threads, how far they load ahead and the preprocessing cache of an
/// inference pass.
#[derive(Debug, Clone)]
pub struct InferOptions {
    pub batch_size: usize,
    /// Batches loaded ahead of the forward pass, beyond the one it holds.
    pub prefetch_batches: usize,
    /// Threads decoding and preprocessing images (see [`ThreadSplit`]).
    pub loaders: usize,
    pub cache: Option<TensorCache>,
}

impl Default for InferOptions {
    fn default() -> Self {
        Self {
            batch_size: 8,
            prefetch_batches: 2,
            loaders: ThreadSplit::new(None, None).loaders,
            cache: None,
        }
    }
}

/// One item's position in the input and its result.
pub type IndexedPrediction = (usize, Result<Prediction, PredictionError>);

/// Predicts every item, in input order. Items that fail to load or preprocess give a
/// `PredictionError`; a failing forward pass fails its batch's items the same way.
/// `on_progress(done, total)` is called after each batch.
pub fn predict_items(
    model: &dyn LogitsModel,
    items: &[Item],
    options: &InferOptions,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Vec<Result<Prediction, PredictionError>> {
    let total = items.len();
    let mut results = Vec::with_capacity(total);
    predict_stream(model, Arc::new(items.to_vec()), options, &mut |batch| {
        results.extend(batch.into_iter().map(|(_, result)| result));
        on_progress(results.len(), total);
        true
    });
    results
}

/// Predicts items batch after batch while the loader pool decodes and preprocesses the
/// next ones, handing each batch's results (in input order, every item of the batch,
/// failures included) to `on_batch`, which returns whether to go on. A batch's input is
/// the same whatever the number of loaders, so the predictions are too.
pub fn predict_stream(
    model: &dyn LogitsModel,
    items: Arc<Vec<Item>>,
    options: &InferOptions,
    on_batch: &mut dyn FnMut(Vec<IndexedPrediction>) -> bool,
) {
    let _guard = tch::no_grad_guard();
    let preset = model.preset();
    let [_, d, h, w] = preset.input_shape();
    let loader = ItemLoader::new(preset.clone(), options.cache.clone());
    let pool = LoaderPool::start(
        Arc::clone(&items),
        loader,
        options.batch_size,
        options.loaders,
        options.prefetch_batches,
    );
    for batch in pool {
        let mut results: Vec<Option<Result<Prediction, PredictionError>>> =
            vec![None; batch.indices.len()];
        let first = batch.indices.first().copied().unwrap_or(0);
        for (index, error) in batch.failures {
            results[index - first] = Some(Err(PredictionError {
                id: items[index].id.clone(),
                not_registered: error.is_not_registered(),
                error: error.to_string(),
            }));
        }
        if !batch.loaded.is_empty() {
            let input = Tensor::from_slice(&batch.values)
                .view([batch.loaded.len() as i64, 1, d, h, w])
                .to_device(model.device());
            let probs = model
                .logits_and_domain(&input)
                .and_then(|(logits, domain)| {
                    let domain = match domain {
                        Some(d) => {
                            let p = d
                                .softmax(-1, Kind::Float)
                                .select(1, 1)
                                .to_device(Device::Cpu);
                            Some(Vec::<f32>::try_from(&p.contiguous())?)
                        }
                        None => None,
                    };
                    let probs = logits
                        .softmax(-1, Kind::Float)
                        .to_device(Device::Cpu)
                        .contiguous();
                    let classes = probs.size().get(1).copied().unwrap_or(0) as usize;
                    let flat = Vec::<f32>::try_from(&probs.view([-1]))?;
                    if classes == 0 || flat.len() != classes * batch.loaded.len() {
                        return Err(ModelError::Data(format!(
                            "model returned a {} tensor for a batch of {}",
                            crate::display::shape(&probs.size()),
                            batch.loaded.len()
                        )));
                    }
                    Ok((flat, classes, domain))
                });
            match probs {
                Ok((flat, classes, domain)) => {
                    for (n, (row, &index)) in flat.chunks(classes).zip(&batch.loaded).enumerate() {
                        // Weights that pass every check (finite, right shapes) can still
                        // give no probability (a negative BatchNorm variance), as can a
                        // tensor of NaN: a failed item, never a label from NaN.
                        if !row.iter().all(|p| p.is_finite()) {
                            results[index - first] = Some(Err(PredictionError {
                                id: items[index].id.clone(),
                                error: format!(
                                    "{}: the network gave no finite probability (check the model's weights)",
                                    items[index].id
                                ),
                                not_registered: false,
                            }));
                            continue;
                        }
                        let label = row
                            .iter()
                            .enumerate()
                            .max_by(|a, b| a.1.total_cmp(b.1))
                            .map_or(0, |(class, _)| class);
                        results[index - first] = Some(Ok(Prediction {
                            id: items[index].id.clone(),
                            probs: row.to_vec(),
                            label,
                            domain_target: domain.as_ref().and_then(|d| d.get(n).copied()),
                        }));
                    }
                }
                Err(err) => {
                    for &index in &batch.loaded {
                        results[index - first] = Some(Err(PredictionError {
                            id: items[index].id.clone(),
                            error: err.to_string(),
                            not_registered: false,
                        }));
                    }
                }
            }
        }
        let results = batch
            .indices
            .iter()
            .zip(results)
            .map(|(&index, result)| {
                let result = result.unwrap_or_else(|| {
                    Err(PredictionError {
                        id: items[index].id.clone(),
                        error: "item was not processed".to_string(),
                        not_registered: false,
                    })
                });
                (index, result)
            })
            .collect();
        if !on_batch(results) {
            return;
        }
    }
}

/// A trained Conv5_FC3_SSDA network and the head it predicts with. By default it predicts
/// through a `FoldedExtractor` (BatchNorm folded into the convolutions; channels-last 3D
/// layout on the CPU), which gives the network's eval-mode outputs faster; `unfolded()`
/// runs the network as trained instead.
pub struct Predictor {
    vs: nn::VarStore,
    net: Conv5Fc3Ssda,
    folded: Option<FoldedExtractor>,
    preset: Preset,
    head: Head,
    /// Also give the domain head's output (a network trained with it).
    domain: bool,
}

impl Predictor {
    /// Loads weights (safetensors or libtorch format) for a network of `spec`'s shape.
    pub fn load(
        weights: &Path,
        preset: Preset,
        source_classes: usize,
        target_classes: usize,
        head: Head,
        device: Device,
    ) -> Result<Self, ModelError> {
        let spec = NetworkSpec::new(preset.preprocess.shape, source_classes, target_classes);
        Self::load_spec(weights, preset, &spec, head, device)
    }

    /// Loads weights for a network of exactly `spec` (domain outputs and pooling
    /// included), as a training run's configuration describes it.
    pub fn load_spec(
        weights: &Path,
        preset: Preset,
        spec: &NetworkSpec,
        head: Head,
        device: Device,
    ) -> Result<Self, ModelError> {
        let spec = spec.clone();
        let refused = |detail: String| ModelError::File {
            path: weights.to_path_buf(),
            detail,
        };
        spec.check().map_err(refused)?;
        check_weights_file(weights)?;
        // libtorch's bindings panic on what they cannot allocate or copy; whatever the
        // checks above let through is a refused file, never a crash mid-run.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut vs = nn::VarStore::new(device);
            let net = Conv5Fc3Ssda::new(&vs.root(), &spec);
            vs.load(weights).map(|()| (vs, net))
        }));
        let (vs, net) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(err)) => return Err(refused(err.to_string())),
            Err(panic) => {
                return Err(refused(format!(
                    "libtorch could not load these weights into the network: {}",
                    crate::import::analyse::panic_message(panic.as_ref())
                )));
            }
        };
        let folded = Some(net.folded_extractor(device == Device::Cpu));
        Ok(Self {
            vs,
            net,
            folded,
            preset,
            head,
            domain: false,
        })
    }

    /// The best weights of a training run directory, predicting with the run's method's
    /// head.
    pub fn from_run_dir(run_dir: &Path, device: Device) -> Result<Self, ModelError> {
        let state = CheckpointState::read(run_dir)?;
        let config = state.config;
        let trained_domain_head =
            config.method == super::train::Method::Ssda && config.domain_weight > 0.0;
        Ok(Self::load_spec(
            &run_dir.join(BEST_WEIGHTS),
            config.preset.clone(),
            &config.network_spec(),
            config.prediction_head(),
            device,
        )?
        .with_domain(trained_domain_head))
    }

    /// Whether predictions also carry the domain head's probability of the target
    /// domain (meaningful only for a network trained with its domain head).
    pub fn with_domain(mut self, domain: bool) -> Self {
        self.domain = domain;
        self
    }

    pub fn with_head(mut self, head: Head) -> Self {
        self.head = head;
        self
    }

    /// Predicts with the network's own eval-mode layers (no folding); the outputs agree
    /// to rounding.
    pub fn unfolded(mut self) -> Self {
        self.folded = None;
        self
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Adapts the BatchNorm statistics to `items` (unlabelled images of the warehouse it
    /// is about to predict; see [`Conv5Fc3Ssda::adapt_batchnorm`]). Items that fail to
    /// load are left out. Returns the images used.
    pub fn adapt_batchnorm(
        &mut self,
        items: &[super::data::Item],
        cache: Option<crate::imaging::preprocess::TensorCache>,
    ) -> usize {
        let loader = super::data::ItemLoader::new(self.preset.clone(), cache);
        let [_, d, h, w] = self.preset.input_shape();
        let device = self.vs.device();
        let loaded: Vec<Vec<f32>> = items.iter().filter_map(|i| loader.load(i).ok()).collect();
        let batches: Vec<Tensor> = loaded
            .chunks(ADAPT_BATCH)
            .map(|chunk| {
                let flat: Vec<f32> = chunk.concat();
                Tensor::from_slice(&flat)
                    .view([chunk.len() as i64, 1, d, h, w])
                    .to_device(device)
            })
            .collect();
        let used = self.net.adapt_batchnorm(&batches);
        if let Some(folded) = &self.folded {
            let channels_last = folded.is_channels_last();
            self.folded = Some(self.net.folded_extractor(channels_last));
        }
        used
    }
}

/// Images per forward pass while BatchNorm statistics are re-estimated.
const ADAPT_BATCH: usize = 8;

impl LogitsModel for Predictor {
    fn preset(&self) -> &Preset {
        &self.preset
    }

    fn device(&self) -> Device {
        self.vs.device()
    }

    fn logits(&self, input: &Tensor) -> Result<Tensor, ModelError> {
        Ok(match &self.folded {
            Some(folded) => self
                .net
                .head_logits(&folded.features(input), self.head, 1.0, false),
            None => self.net.forward_head(input, self.head, false),
        })
    }

    fn logits_and_domain(&self, input: &Tensor) -> Result<(Tensor, Option<Tensor>), ModelError> {
        if !self.domain {
            return Ok((self.logits(input)?, None));
        }
        let features = match &self.folded {
            Some(folded) => folded.features(input),
            None => self.net.features(input, false),
        };
        Ok((
            self.net.head_logits(&features, self.head, 1.0, false),
            Some(self.net.head_logits(&features, Head::Domain, 1.0, false)),
        ))
    }
}

/// The networks of one model card predicting together: their class probabilities
/// averaged (an ensemble of seeds; `cdwqc model export --member-run`). As a
/// [`LogitsModel`] it gives the log of the mean probabilities, so the softmax that
/// follows yields the mean itself; a single network's logits pass through unchanged.
pub struct Ensemble {
    members: Vec<Predictor>,
}

impl Ensemble {
    pub fn new(members: Vec<Predictor>) -> Result<Self, ModelError> {
        if members.is_empty() {
            return Err(ModelError::Config("an ensemble needs a network".into()));
        }
        Ok(Self { members })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adapts every network's BatchNorm statistics to the same images; returns how many
    /// were used.
    pub fn adapt_batchnorm(
        &mut self,
        items: &[super::data::Item],
        cache: Option<crate::imaging::preprocess::TensorCache>,
    ) -> usize {
        let mut used = 0;
        for member in &mut self.members {
            used = member.adapt_batchnorm(items, cache.clone());
        }
        used
    }

    /// The log of the mean of each output's softmax over the networks.
    fn mean_log_probabilities(outputs: &[Tensor]) -> Tensor {
        let sum = outputs
            .iter()
            .map(|logits| logits.softmax(-1, Kind::Float))
            .reduce(|a, b| a + b)
            .expect("an ensemble has a network");
        (sum / outputs.len() as f64).log()
    }
}

impl LogitsModel for Ensemble {
    fn preset(&self) -> &Preset {
        self.members[0].preset()
    }

    fn device(&self) -> Device {
        self.members[0].device()
    }

    fn logits(&self, input: &Tensor) -> Result<Tensor, ModelError> {
        if let [single] = self.members.as_slice() {
            return single.logits(input);
        }
        let outputs = self
            .members
            .iter()
            .map(|m| m.logits(input))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::mean_log_probabilities(&outputs))
    }

    fn logits_and_domain(&self, input: &Tensor) -> Result<(Tensor, Option<Tensor>), ModelError> {
        if let [single] = self.members.as_slice() {
            return single.logits_and_domain(input);
        }
        let mut logits = Vec::with_capacity(self.members.len());
        let mut domains = Vec::with_capacity(self.members.len());
        for member in &self.members {
            let (l, d) = member.logits_and_domain(input)?;
            logits.push(l);
            domains.extend(d);
        }
        let domain =
            (domains.len() == self.members.len()).then(|| Self::mean_log_probabilities(&domains));
        Ok((Self::mean_log_probabilities(&logits), domain))
    }
}

/// A TorchScript classifier. Input contract: float32 `[N, 1, D, H, W]` in [0, 1] on the
/// preset grid (module `imaging::preprocess` layout); output logits `[N, K]`.
pub struct ScriptModel {
    module: tch::CModule,
    preset: Preset,
    device: Device,
}

impl ScriptModel {
    pub fn load(path: &Path, preset: Preset, device: Device) -> Result<Self, ModelError> {
        let mut module =
            tch::CModule::load_on_device(path, device).map_err(|err| ModelError::File {
                path: path.to_path_buf(),
                detail: err.to_string(),
            })?;
        module.set_eval();
        Ok(Self {
            module,
            preset,
            device,
        })
    }
}

impl LogitsModel for ScriptModel {
    fn preset(&self) -> &Preset {
        &self.preset
    }

    fn device(&self) -> Device {
        self.device
    }

    fn logits(&self, input: &Tensor) -> Result<Tensor, ModelError> {
        // Traced modules may wrap their single output in a tuple.
        let output = match self
            .module
            .forward_is(&[tch::IValue::Tensor(input.shallow_clone())])?
        {
            tch::IValue::Tensor(tensor) => tensor,
            tch::IValue::Tuple(mut values) | tch::IValue::GenericList(mut values)
                if values.len() == 1 =>
            {
                match values.pop() {
                    Some(tch::IValue::Tensor(tensor)) => tensor,
                    _ => {
                        return Err(ModelError::Data(
                            "TorchScript model returned a non-tensor value".into(),
                        ));
                    }
                }
            }
            _ => {
                return Err(ModelError::Data(
                    "TorchScript model must return one logits tensor".into(),
                ));
            }
        };
        if output.dim() != 2 {
            return Err(ModelError::Data(format!(
                "TorchScript model returned shape {}, expected NxK logits",
                crate::display::shape(&output.size())
            )));
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of one tensor `w` of `data`'s dtype and bytes.
    fn one_tensor(path: &Path, dtype: safetensors::Dtype, data: &[u8]) {
        let width = match dtype {
            safetensors::Dtype::I32 | safetensors::Dtype::F32 => 4,
            _ => 1,
        };
        let view = safetensors::tensor::TensorView::new(dtype, vec![data.len() / width], data)
            .expect("view");
        let bytes = safetensors::tensor::serialize([("w", view)], &None).expect("serialize");
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn weights_that_are_not_finite_floats_or_not_a_file_are_refused_before_libtorch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floats: Vec<u8> = [1.0f32, -2.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let good = dir.path().join("good.safetensors");
        one_tensor(&good, safetensors::Dtype::F32, &floats);
        check_weights_file(&good).expect("finite floats pass");
        let int = dir.path().join("int.safetensors");
        one_tensor(&int, safetensors::Dtype::I32, &floats);
        let err = check_weights_file(&int).unwrap_err().to_string();
        assert!(err.contains("tensor w is stored as I32"), "{err}");
        let nan = dir.path().join("nan.safetensors");
        let nans: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        one_tensor(&nan, safetensors::Dtype::F32, &nans);
        let err = check_weights_file(&nan).unwrap_err().to_string();
        assert!(err.contains("NaN or infinite"), "{err}");
        let fifo = dir.path().join("fifo.safetensors");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("mkfifo").success());
        let err = check_weights_file(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // The loader refuses them too, and a grid no machine could build.
        let preset = Preset::builtin("tiny").expect("tiny preset");
        for path in [&int, &nan, &fifo] {
            assert!(
                Predictor::load(path, preset.clone(), 2, 2, Head::Target, Device::Cpu).is_err()
            );
        }
        let huge = NetworkSpec::new([100_000; 3], 2, 2);
        let err = Predictor::load_spec(&good, preset, &huge, Head::Target, Device::Cpu)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("each side must be 1 to 512"), "{err}");
    }

    /// A network of the tiny preset with seeded random weights, saved and loaded back.
    fn tiny_predictor(seed: i64, dir: &Path) -> Predictor {
        tch::manual_seed(seed);
        let preset = Preset::builtin("tiny").expect("tiny preset");
        let spec = NetworkSpec::new(preset.preprocess.shape, 2, 2);
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = Conv5Fc3Ssda::new(&vs.root(), &spec);
        let path = dir.join(format!("weights-{seed}.safetensors"));
        vs.save(&path).expect("save weights");
        Predictor::load(&path, preset, 2, 2, Head::Target, Device::Cpu).expect("load weights")
    }

    #[test]
    fn an_ensemble_predicts_the_mean_of_its_networks_probabilities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tiny_predictor(1, dir.path()), tiny_predictor(2, dir.path()));
        let [_, d, h, w] = a.preset().input_shape();
        tch::manual_seed(7);
        let input = Tensor::rand([3, 1, d, h, w], (Kind::Float, Device::Cpu));
        let probabilities = |model: &dyn LogitsModel| {
            let p = model
                .logits(&input)
                .expect("logits")
                .softmax(-1, Kind::Float)
                .contiguous();
            Vec::<f32>::try_from(&p.view([-1])).expect("floats")
        };
        let (pa, pb) = (probabilities(&a), probabilities(&b));
        assert!(
            pa.iter().zip(&pb).any(|(x, y)| (x - y).abs() > 1e-3),
            "two seeds, two networks"
        );
        // One network: its own logits, bit for bit.
        let single = Ensemble::new(vec![tiny_predictor(1, dir.path())]).expect("ensemble");
        assert_eq!(probabilities(&single), pa);
        let both = Ensemble::new(vec![a, b]).expect("ensemble");
        assert_eq!(both.len(), 2);
        for ((p, x), y) in probabilities(&both).iter().zip(&pa).zip(&pb) {
            assert!((p - (x + y) / 2.0).abs() < 1e-6, "{p} against {x} and {y}");
        }
        assert!(Ensemble::new(Vec::new()).is_err());
    }

    fn failure(not_registered: bool) -> Result<Prediction, PredictionError> {
        Err(PredictionError {
            id: "7".into(),
            error: "/w/sub-1_FLAIR.nii.gz: registration failed: correlation ratio 0.1".into(),
            not_registered,
        })
    }

    #[test]
    fn an_image_that_does_not_register_is_a_reject_with_its_reason_where_the_task_has_one() {
        let row = Prediction::row(&failure(true), 7, "usable", &["usable", "reject"]);
        assert_eq!(row.label.as_deref(), Some("reject"));
        assert_eq!(row.probabilities, Some(vec![0.0, 1.0]));
        assert_eq!(row.error, None);
        assert!(
            row.reason
                .as_deref()
                .is_some_and(|r| r.contains("sub-1_FLAIR.nii.gz"))
        );

        // The quality grade has no reject class: the image stays a failure.
        let row = Prediction::row(&failure(true), 7, "quality", &["good", "medium", "bad"]);
        assert_eq!(
            (row.label, row.probabilities, row.reason),
            (None, None, None)
        );
        assert!(row.error.is_some_and(|e| e.contains("registration failed")));

        // An unreadable file is a failure whatever the task.
        let row = Prediction::row(&failure(false), 7, "usable", &["usable", "reject"]);
        assert_eq!((row.label, row.reason), (None, None));
        assert!(row.error.is_some());

        // The network's own outputs carry no reason.
        let ok = Ok(Prediction {
            id: "7".into(),
            probs: vec![0.75, 0.25],
            label: 0,
            domain_target: Some(0.5),
        });
        let row = Prediction::row(&ok, 7, "usable", &["usable", "reject"]);
        assert_eq!(row.label.as_deref(), Some("usable"));
        assert_eq!(row.probabilities, Some(vec![0.75, 0.25]));
        assert_eq!(
            (row.error, row.reason, row.domain_target),
            (None, None, Some(0.5))
        );
    }
}
