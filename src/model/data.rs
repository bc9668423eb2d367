//! Training and inference items, their loading through preprocessing and the cache, and
//! a prefetching pipeline that assembles batches on worker threads ahead of compute.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rayon::prelude::*;

use super::augment::{Augmenter, item_rng};
use crate::imaging::load_volume_with_scaled_counts;
use crate::imaging::preprocess::{PreprocessError, TensorCache, preprocess_counted};
use crate::imaging::registration::{RegistrationError, RegistrationMode};
use crate::model::preset::Preset;

/// Why an item has no tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadFailure {
    /// The file could not be read or preprocessed (I/O, a corrupt header or cache entry,
    /// a wrong size); the message names the file and the problem.
    Error(String),
    /// The image was read but does not register to the preset's template: the fit was
    /// flagged (the template's brain is not where the image has one) or no head was
    /// found. A property of the content, not of the file: a usability model stores it as
    /// a reject with this message as its reason.
    NotRegistered(String),
}

impl LoadFailure {
    pub fn message(&self) -> &str {
        match self {
            Self::Error(message) | Self::NotRegistered(message) => message,
        }
    }

    pub fn is_not_registered(&self) -> bool {
        matches!(self, Self::NotRegistered(_))
    }
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl From<String> for LoadFailure {
    fn from(message: String) -> Self {
        Self::Error(message)
    }
}

/// A function producing one preprocessed volume (or a message saying why not).
pub type TensorLoader = Arc<dyn Fn() -> Result<Vec<f32>, String> + Send + Sync>;

/// Where an item's voxels come from.
#[derive(Clone)]
pub enum ItemSource {
    /// Already preprocessed values on the preset grid.
    Tensor(Arc<Vec<f32>>),
    /// A NIfTI file, preprocessed on load; with its sha256 the result is cached.
    File {
        path: PathBuf,
        sha256: Option<String>,
        /// Size and modification time at import, when the store gave them.
        stamp: Option<crate::import::analyse::FileStamp>,
    },
    /// Any other producer of preprocessed values.
    Loader(TensorLoader),
}

impl std::fmt::Debug for ItemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tensor(values) => write!(f, "Tensor({} values)", values.len()),
            Self::File { path, sha256, .. } => {
                write!(f, "File({}, {sha256:?})", path.display())
            }
            Self::Loader(_) => write!(f, "Loader"),
        }
    }
}

/// One image: an identifier (e.g. the store's image id), its voxels and, when labelled,
/// its class index.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub source: ItemSource,
    pub label: Option<usize>,
    /// A probability per class to train towards instead of `label` alone (the latent
    /// truth's posterior); `label` stays its most probable class, for accuracy.
    pub soft_label: Option<Vec<f32>>,
}

impl Item {
    pub fn from_tensor(id: impl Into<String>, values: Vec<f32>, label: Option<usize>) -> Self {
        Self {
            id: id.into(),
            source: ItemSource::Tensor(Arc::new(values)),
            label,
            soft_label: None,
        }
    }

    /// The file's size and modification time at import: a file that no longer has
    /// them is refused, so that no tensor, cache entry or prediction comes from content
    /// the store does not describe.
    pub fn with_stamp(mut self, stamp: Option<crate::import::analyse::FileStamp>) -> Self {
        if let ItemSource::File { stamp: s, .. } = &mut self.source {
            *s = stamp;
        }
        self
    }

    pub fn from_file(
        id: impl Into<String>,
        path: impl Into<PathBuf>,
        sha256: Option<String>,
        label: Option<usize>,
    ) -> Self {
        Self {
            id: id.into(),
            source: ItemSource::File {
                path: path.into(),
                sha256,
                stamp: None,
            },
            label,
            soft_label: None,
        }
    }

    /// The item trained towards `probabilities` (one per class) rather than its label.
    pub fn with_soft_label(mut self, probabilities: Option<Vec<f32>>) -> Self {
        self.soft_label = probabilities;
        self
    }
}

/// Turns items into preset-grid values: decode, preprocess and cache.
#[derive(Debug, Clone)]
pub struct ItemLoader {
    pub preset: Preset,
    pub cache: Option<TensorCache>,
}

impl ItemLoader {
    pub fn new(preset: Preset, cache: Option<TensorCache>) -> Self {
        Self { preset, cache }
    }

    /// The item's preprocessed values; the failure's message names the item and the
    /// problem.
    pub fn load(&self, item: &Item) -> Result<Vec<f32>, LoadFailure> {
        let spec = &self.preset.preprocess;
        let values = match &item.source {
            ItemSource::Tensor(values) => values.as_ref().clone(),
            ItemSource::Loader(loader) => loader()?,
            ItemSource::File {
                path,
                sha256,
                stamp,
            } => {
                if let Some(why) = stamp.and_then(|s| s.changed(path)) {
                    return Err(LoadFailure::Error(format!("{}: {why}", path.display())));
                }
                // An entry that cannot be trusted (another format, another image's
                // tensor, a bad checksum, a FIFO planted there) is a miss: the tensor is
                // computed again and replaces it.
                let cached = match (&self.cache, sha256) {
                    (Some(cache), Some(sha)) => {
                        cache.get(sha, &self.preset.name, spec).ok().flatten()
                    }
                    _ => None,
                };
                match cached {
                    Some(values) => values,
                    None => self.prepare(&item.id, path, sha256.as_deref())?,
                }
            }
        };
        if values.len() != spec.voxel_count() {
            return Err(LoadFailure::Error(format!(
                "{}: {} values, preset {} expects {} = {}",
                item.id,
                values.len(),
                self.preset.name,
                crate::display::shape(&spec.shape),
                spec.voxel_count()
            )));
        }
        Ok(values)
    }

    /// Decodes and preprocesses an image the cache does not hold, and caches the result.
    /// A flagged registration is a property of the content and the spec, and costs
    /// seconds: it is recorded too, so later epochs and runs do not register the image
    /// again.
    fn prepare(
        &self,
        id: &str,
        path: &std::path::Path,
        sha256: Option<&str>,
    ) -> Result<Vec<f32>, LoadFailure> {
        let spec = &self.preset.preprocess;
        let name = &self.preset.name;
        let cache = self.cache.as_ref().zip(sha256);
        // Only registering specs record failures: other loads skip the extra lookup.
        let registers = spec.registration != RegistrationMode::None;
        if let Some((cache, sha)) = cache.filter(|_| registers) {
            let recorded = cache
                .get_failure(sha, name, spec)
                .map_err(|err| format!("{id}: {err}"))?;
            if let Some(message) = recorded {
                return Err(LoadFailure::NotRegistered(format!(
                    "{}: {message} (recorded by an earlier attempt in {}; delete that file to try again)",
                    path.display(),
                    cache.failure_path_for(sha, name, spec).display()
                )));
            }
        }
        let (volume, counts) =
            load_volume_with_scaled_counts(path).map_err(|err| err.to_string())?;
        let values = preprocess_counted(&volume, spec, counts.as_ref())
            .map(|prepared| prepared.values)
            .map_err(|err| {
                let message = format!("{}: {err}", path.display());
                match (&err, cache) {
                    (PreprocessError::RegistrationFailed { .. }, Some((cache, sha))) => {
                        LoadFailure::NotRegistered(
                            match cache.put_failure(sha, name, spec, &err.to_string()) {
                                Ok(_) => message,
                                Err(e) => format!("{message}; recording it: {e}"),
                            },
                        )
                    }
                    (
                        PreprocessError::RegistrationFailed { .. }
                        | PreprocessError::Registration(RegistrationError::NoHead(_)),
                        _,
                    ) => LoadFailure::NotRegistered(message),
                    _ => LoadFailure::Error(message),
                }
            })?;
        // A cache that cannot be written (a folder planted under the entry's name, a
        // read-only disk) costs the next run this work again, not this image.
        if let Some((cache, sha)) = cache {
            let _ = cache.put(sha, name, spec, &values);
        }
        Ok(values)
    }
}

/// A loaded batch: positions into the item list, values of the items that loaded
/// (concatenated in order), and per-item failures.
#[derive(Debug)]
pub struct LoadedBatch {
    pub indices: Vec<usize>,
    pub values: Vec<f32>,
    pub loaded: Vec<usize>,
    pub failures: Vec<(usize, LoadFailure)>,
}

/// Loads batches of items on background threads, `depth` batches ahead of the consumer.
/// Within a batch, items load in parallel on the rayon pool.
pub struct Prefetcher {
    receiver: Receiver<LoadedBatch>,
    worker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Augmentation of one stream's items for one epoch: item `p` of batch `b` draws from
/// `item_rng(seed, b, p)` whichever thread loads it.
#[derive(Debug, Clone)]
pub struct StreamAugment {
    pub augmenter: Arc<Augmenter>,
    pub seed: u64,
}

impl Prefetcher {
    pub fn start(
        items: Arc<Vec<Item>>,
        batches: Vec<Vec<usize>>,
        loader: ItemLoader,
        depth: usize,
    ) -> Self {
        Self::start_augmented(items, batches, loader, depth, None)
    }

    /// As `start`, with every loaded item augmented when `augment` is given.
    pub fn start_augmented(
        items: Arc<Vec<Item>>,
        batches: Vec<Vec<usize>>,
        loader: ItemLoader,
        depth: usize,
        augment: Option<StreamAugment>,
    ) -> Self {
        let (sender, receiver) = sync_channel(depth.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let worker = std::thread::spawn(move || {
            for (batch_index, indices) in batches.into_iter().enumerate() {
                if stop_flag.load(Ordering::SeqCst) {
                    return;
                }
                let results: Vec<Result<Vec<f32>, LoadFailure>> = indices
                    .par_iter()
                    .enumerate()
                    .map(|(position, &index)| {
                        let mut values = loader.load(&items[index])?;
                        if let Some(augment) = &augment {
                            let mut rng = item_rng(augment.seed, batch_index, position);
                            augment.augmenter.apply(&mut values, &mut rng);
                        }
                        Ok(values)
                    })
                    .collect();
                let mut batch = LoadedBatch {
                    indices: indices.clone(),
                    values: Vec::new(),
                    loaded: Vec::new(),
                    failures: Vec::new(),
                };
                for (index, result) in indices.into_iter().zip(results) {
                    match result {
                        Ok(values) => {
                            batch.values.extend_from_slice(&values);
                            batch.loaded.push(index);
                        }
                        Err(message) => batch.failures.push((index, message)),
                    }
                }
                if sender.send(batch).is_err() {
                    return;
                }
            }
        });
        Self {
            receiver,
            worker: Some(worker),
            stop,
        }
    }
}

impl Iterator for Prefetcher {
    type Item = LoadedBatch;

    fn next(&mut self) -> Option<LoadedBatch> {
        self.receiver.recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Drain so a worker blocked on a full channel can see the flag and exit.
        while self.receiver.try_recv().is_ok() {}
        if let Some(worker) = self.worker.take() {
            // Keep draining until the worker exits; it sends at most one more batch.
            while !worker.is_finished() {
                let _ = self
                    .receiver
                    .recv_timeout(std::time::Duration::from_millis(10));
            }
            let _ = worker.join();
        }
    }
}

/// Splits `0..count` into consecutive batches of `batch_size`.
pub fn sequential_batches(count: usize, batch_size: usize) -> Vec<Vec<usize>> {
    let indices: Vec<usize> = (0..count).collect();
    indices
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetcher_yields_all_batches_in_order_with_failures_reported() {
        let preset = Preset::builtin("tiny").unwrap();
        let n = preset.preprocess.voxel_count();
        let mut items: Vec<Item> = (0..5)
            .map(|i| Item::from_tensor(format!("v{i}"), vec![i as f32; n], Some(i % 2)))
            .collect();
        items.push(Item::from_file("missing", "/nonexistent/x.nii", None, None));
        items.push(Item::from_tensor("short", vec![0.0; 3], None));
        let batches = sequential_batches(items.len(), 3);
        let prefetcher =
            Prefetcher::start(Arc::new(items), batches, ItemLoader::new(preset, None), 2);
        let loaded: Vec<LoadedBatch> = prefetcher.collect();
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded[0].loaded, vec![0, 1, 2]);
        assert_eq!(loaded[0].values.len(), 3 * n);
        assert_eq!(loaded[1].values[n], 4.0);
        assert_eq!(loaded[1].failures.len(), 1);
        assert!(
            loaded[1].failures[0]
                .1
                .message()
                .contains("/nonexistent/x.nii")
        );
        assert!(loaded[2].failures[0].1.message().contains("short"));
    }

    #[test]
    fn file_items_are_preprocessed_once_and_then_read_from_the_cache() {
        let preset = Preset::builtin("tiny").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = TensorCache::new(dir.path());
        let loader = ItemLoader::new(preset.clone(), Some(cache.clone()));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/external/anatomical.nii");
        let item = Item::from_file("anat", path, Some("feedbeef".into()), None);
        let first = loader.load(&item).unwrap();
        assert_eq!(first.len(), preset.preprocess.voxel_count());
        assert!(first.iter().any(|v| *v > 0.5));
        let cached = cache.path_for("feedbeef", "tiny", &preset.preprocess);
        assert!(cached.exists());
        // A different valid tensor under the same key proves later loads read the cache.
        let marker = vec![0.25f32; preset.preprocess.voxel_count()];
        cache
            .put("feedbeef", "tiny", &preset.preprocess, &marker)
            .unwrap();
        assert_eq!(loader.load(&item).unwrap(), marker);
    }

    #[test]
    fn a_file_changed_since_import_is_refused_and_nothing_is_cached() {
        let preset = Preset::builtin("tiny").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = TensorCache::new(dir.path().join("cache"));
        let loader = ItemLoader::new(preset.clone(), Some(cache.clone()));
        let path = dir.path().join("anat.nii");
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/external/anatomical.nii"),
            &path,
        )
        .unwrap();
        let at_import = crate::import::analyse::FileStamp::of(&std::fs::metadata(&path).unwrap());
        let item = |stamp| {
            Item::from_file("anat", &path, Some("feedbeef".into()), None).with_stamp(Some(stamp))
        };
        // Another image under the same name, one byte longer.
        let mut other = std::fs::read(&path).unwrap();
        other.push(0);
        std::fs::write(&path, &other).unwrap();
        let refused = loader.load(&item(at_import)).unwrap_err();
        assert!(
            refused.message().contains("changed since it was imported"),
            "{}",
            refused.message()
        );
        assert!(
            !cache
                .path_for("feedbeef", "tiny", &preset.preprocess)
                .exists()
        );
        // Re-imported (a new stamp), it loads.
        let now = crate::import::analyse::FileStamp::of(&std::fs::metadata(&path).unwrap());
        assert!(loader.load(&item(now)).is_ok());
    }

    #[test]
    fn dropping_early_stops_the_worker() {
        let preset = Preset::builtin("tiny").unwrap();
        let n = preset.preprocess.voxel_count();
        let items: Vec<Item> = (0..40)
            .map(|i| Item::from_tensor(format!("v{i}"), vec![0.0; n], None))
            .collect();
        let mut prefetcher = Prefetcher::start(
            Arc::new(items),
            sequential_batches(40, 1),
            ItemLoader::new(preset, None),
            1,
        );
        assert!(prefetcher.next().is_some());
        drop(prefetcher);
    }
}
