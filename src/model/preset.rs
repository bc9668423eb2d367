//! Model presets: the input grid, preprocessing and default batch size and epochs,
//! read from `models/presets/*.toml`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::augment::AugmentSpec;
use super::recipe::TrainingSection;
use crate::imaging::preprocess::PreprocessSpec;

/// One named input configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub batch_size: usize,
    pub epochs: usize,
    pub preprocess: PreprocessSpec,
    /// The training recipe and overrides of its rules (`[training]`).
    #[serde(default)]
    pub training: TrainingSection,
    /// Augmentation on the fly of training images (`[augment]`; off unless enabled).
    #[serde(default)]
    pub augment: AugmentSpec,
}

const BUILTIN: [(&str, &str); 5] = [
    ("tiny", include_str!("../../models/presets/tiny.toml")),
    ("demo", include_str!("../../models/presets/demo.toml")),
    (
        "cpu-small",
        include_str!("../../models/presets/cpu-small.toml"),
    ),
    ("paper", include_str!("../../models/presets/paper.toml")),
    (
        "pretrained",
        include_str!("../../models/presets/pretrained.toml"),
    ),
];

impl Preset {
    /// Names of the presets compiled into the binary.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(name, _)| *name).collect()
    }

    /// A preset compiled into the binary (a copy of `models/presets/<name>.toml`).
    pub fn builtin(name: &str) -> Result<Self, ModelError> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "unknown preset {name:?}; known: {}",
                    Self::builtin_names().join(", ")
                ))
            })?;
        Self::parse(text, name)
    }

    /// Reads a preset TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, ModelError> {
        let preset: Self = toml::from_str(text)
            .map_err(|err| ModelError::Config(format!("preset {origin}: {err}")))?;
        if preset.batch_size == 0 || preset.preprocess.shape.contains(&0) {
            return Err(ModelError::Config(format!(
                "preset {origin}: batch size and grid sizes must be positive"
            )));
        }
        preset.training.validate(origin)?;
        preset.augment.validate(origin)?;
        Ok(preset)
    }

    /// Input tensor shape of one volume: `[1, D, H, W]`.
    pub fn input_shape(&self) -> [i64; 4] {
        let [d, h, w] = self.preprocess.shape;
        [1, d as i64, h as i64, w as i64]
    }

    /// Features entering each head: 128 channels times the grid after five ceil-mode
    /// max-pools of 2 (ClinicaDL's padded max-pooling).
    pub fn flatten_size(&self) -> i64 {
        super::network::flatten_size(self.preprocess.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_have_expected_flatten_sizes() {
        assert_eq!(Preset::builtin("tiny").unwrap().flatten_size(), 128);
        assert_eq!(
            Preset::builtin("cpu-small").unwrap().flatten_size(),
            128 * 3 * 3 * 3
        );
        // ClinicaDL's Conv5_FC3 on 169x208x179 uses Linear(128 * 6 * 7 * 6, 1300).
        assert_eq!(
            Preset::builtin("paper").unwrap().flatten_size(),
            128 * 6 * 7 * 6
        );
    }

    #[test]
    fn unknown_or_invalid_presets_are_errors() {
        assert!(Preset::builtin("nope").is_err());
        assert!(Preset::parse("name = 'x'", "inline").is_err());
    }

    #[test]
    fn preset_files_match_builtins() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/presets");
        for name in Preset::builtin_names() {
            let file = Preset::from_file(&dir.join(format!("{name}.toml"))).unwrap();
            assert_eq!(file, Preset::builtin(name).unwrap());
        }
    }
}
