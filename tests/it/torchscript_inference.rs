//! Inference through a TorchScript model that follows the documented input contract.

use std::path::Path;

use cdwqc::model::data::Item;
use cdwqc::model::infer::{InferOptions, ScriptModel, predict_items};
use cdwqc::model::preset::Preset;
use tch::Device;

use crate::support::write_mean_classifier;

#[test]
fn torchscript_model_predicts_per_item_with_failures_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mean_classifier.pt");
    let preset = Preset::builtin("tiny").unwrap();
    let [_, d, h, w] = preset.input_shape();
    write_mean_classifier(&path, [d, h, w]);
    let n = preset.preprocess.voxel_count();
    let model = ScriptModel::load(&path, preset, Device::Cpu).unwrap();
    let items = vec![
        Item::from_tensor("dark", vec![0.2; n], None),
        Item::from_tensor("wrong-size", vec![0.2; 10], None),
        Item::from_tensor("bright", vec![0.8; n], None),
    ];
    let options = InferOptions {
        batch_size: 2,
        ..InferOptions::default()
    };
    let mut progress = Vec::new();
    let results = predict_items(&model, &items, &options, &mut |done, total| {
        progress.push((done, total))
    });
    assert_eq!(progress, vec![(2, 3), (3, 3)]);
    let dark = results[0].as_ref().unwrap();
    assert_eq!(dark.label, 0);
    // softmax([3, -3])[0] = 1 / (1 + e^-6)
    let expected = 1.0 / (1.0 + (-6.0f32).exp());
    assert!((dark.probs[0] - expected).abs() < 1e-5, "{:?}", dark.probs);
    assert!(
        results[1]
            .as_ref()
            .unwrap_err()
            .error
            .contains("wrong-size")
    );
    assert_eq!(results[2].as_ref().unwrap().label, 1);
}

#[test]
fn missing_torchscript_file_is_an_error_naming_it() {
    let preset = Preset::builtin("tiny").unwrap();
    let err = ScriptModel::load(Path::new("/nonexistent/model.pt"), preset, Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/model.pt"));
}
