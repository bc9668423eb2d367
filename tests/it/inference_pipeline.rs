//! The inference loader pool: predictions bit for bit those of loading each batch in
//! series, whatever the number of loaders, cold or from the preprocessing cache, with a
//! broken or missing file flagged in its place and the others predicted.

use std::path::Path;

use cdwqc::imaging::preprocess::TensorCache;
use cdwqc::model::data::{Item, ItemLoader};
use cdwqc::model::infer::{InferOptions, LogitsModel, Prediction, Predictor, predict_items};
use cdwqc::model::network::{Conv5Fc3Ssda, Head, NetworkSpec};
use cdwqc::model::preset::Preset;
use tch::{Device, Kind, Tensor, nn};

use crate::support::{float_volume, gzip};

/// A randomly initialised network at the tiny preset, saved and loaded as `cdwqc infer`
/// loads a run's weights.
fn predictor(dir: &Path, preset: &Preset) -> Predictor {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = Conv5Fc3Ssda::new(&vs.root(), &NetworkSpec::new(preset.preprocess.shape, 2, 2));
    let weights = dir.join("weights.safetensors");
    vs.save(&weights).unwrap();
    Predictor::load(&weights, preset.clone(), 2, 2, Head::Target, Device::Cpu).unwrap()
}

/// Volumes of different sizes and contents, a truncated file and a missing one.
fn items(dir: &Path) -> Vec<Item> {
    let mut items = Vec::new();
    for k in 0..19usize {
        let n = [
            18 + (k % 4) as i16,
            20 + (k % 3) as i16,
            16 + (k % 5) as i16,
        ];
        let bytes = float_volume(n, |i| ((i * (k + 3)) % 97) as f32 + (i % 7) as f32 * 0.25);
        let path = dir.join(format!("sub-{k:02}_FLAIR.nii.gz"));
        let mut data = gzip(&bytes);
        if k == 9 {
            data.truncate(data.len() / 2);
        }
        std::fs::write(&path, data).unwrap();
        items.push(Item::from_file(
            format!("{k}"),
            &path,
            Some(format!("{k:064x}")),
            None,
        ));
    }
    items.insert(
        4,
        Item::from_file("missing", dir.join("gone.nii.gz"), None, None),
    );
    items
}

/// What the loop did before the pool: each batch of 8 loaded in series, then forwarded.
fn serial(model: &Predictor, items: &[Item]) -> Vec<Result<Vec<f32>, String>> {
    let _guard = tch::no_grad_guard();
    let loader = ItemLoader::new(model.preset().clone(), None);
    let [_, d, h, w] = model.preset().input_shape();
    let mut out = Vec::new();
    for chunk in items.chunks(8) {
        let loaded: Vec<Result<Vec<f32>, String>> = chunk
            .iter()
            .map(|i| loader.load(i).map_err(|e| e.to_string()))
            .collect();
        let values: Vec<f32> = loaded.iter().flatten().flatten().copied().collect();
        let n = loaded.iter().filter(|r| r.is_ok()).count() as i64;
        let input = Tensor::from_slice(&values).view([n, 1, d, h, w]);
        let probs = model.logits(&input).unwrap().softmax(-1, Kind::Float);
        let flat = Vec::<f32>::try_from(&probs.contiguous().view([-1])).unwrap();
        let mut rows = flat.chunks(2);
        for result in loaded {
            out.push(result.map(|_| rows.next().unwrap().to_vec()));
        }
    }
    out
}

fn bits(probs: &[f32]) -> Vec<u32> {
    probs.iter().map(|p| p.to_bits()).collect()
}

#[test]
fn pooled_predictions_equal_serial_ones_bit_for_bit_cold_and_warm() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let preset = Preset::builtin("tiny").unwrap();
    let model = predictor(dir.path(), &preset);
    let items = items(dir.path());
    let expected = serial(&model, &items);
    assert_eq!(expected.iter().filter(|r| r.is_err()).count(), 2);

    let check = |results: &[Result<Prediction, cdwqc::model::infer::PredictionError>],
                 what: &str| {
        assert_eq!(results.len(), items.len(), "{what}");
        for ((result, want), item) in results.iter().zip(&expected).zip(&items) {
            match (result, want) {
                (Ok(p), Ok(probs)) => {
                    assert_eq!(p.id, item.id, "{what}");
                    assert_eq!(bits(&p.probs), bits(probs), "{what}: item {}", item.id);
                }
                (Err(e), Err(message)) => {
                    assert_eq!(e.id, item.id, "{what}");
                    assert_eq!(&e.error, message, "{what}");
                }
                _ => panic!("{what}: item {} {result:?} against {want:?}", item.id),
            }
        }
    };
    let missing = &expected[4];
    assert!(missing.as_ref().unwrap_err().contains("gone.nii.gz"));
    assert!(
        expected[10]
            .as_ref()
            .unwrap_err()
            .contains("sub-09_FLAIR.nii.gz")
    );

    let cache = TensorCache::new(dir.path().join("cache"));
    for (loaders, ahead, cached) in [(1, 2, false), (1, 2, true), (2, 1, false), (4, 3, true)] {
        let options = InferOptions {
            loaders,
            prefetch_batches: ahead,
            cache: cached.then(|| cache.clone()),
            ..InferOptions::default()
        };
        let mut progress = Vec::new();
        // Twice with the cache: the first run fills it, the second reads from it.
        for pass in 0..if cached { 2 } else { 1 } {
            progress.clear();
            let results = predict_items(&model, &items, &options, &mut |done, total| {
                progress.push((done, total))
            });
            check(
                &results,
                &format!("{loaders} loaders, {ahead} ahead, cache {cached}, pass {pass}"),
            );
        }
        assert_eq!(progress, vec![(8, 20), (16, 20), (20, 20)]);
    }
    assert!(std::fs::read_dir(dir.path().join("cache")).unwrap().count() > 0);
}
