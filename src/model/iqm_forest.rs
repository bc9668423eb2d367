//! The IQM-only quality classifier, the way MRIQC's classifier works: each image's
//! quality metrics scaled robustly within its sequence and scanner group, then a
//! random forest (smartcore's trees; docs/iqm.md). The baseline the CNN is compared with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use crate::imaging::iqm::COLUMNS;

/// The method name runs of this classifier are stored with.
pub const METHOD: &str = "iqm-forest";

/// Columns that describe the grid rather than the image's quality, left out as
/// MRIQC's classifier leaves them out.
const GRID_COLUMNS: [&str; 6] = [
    "size_x",
    "size_y",
    "size_z",
    "spacing_x",
    "spacing_y",
    "spacing_z",
];

#[derive(Debug, thiserror::Error)]
pub enum ForestError {
    #[error("no labelled training image has image quality metrics (run `cdwqc iqm` first)")]
    NoTraining,
    #[error("random forest: {0}")]
    Fit(String),
    #[error("IQM forest file {0}")]
    File(String),
}

/// How the forest is grown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForestConfig {
    pub trees: u16,
    pub seed: u64,
}

impl Default for ForestConfig {
    fn default() -> Self {
        Self {
            trees: 200,
            seed: 0,
        }
    }
}

/// The metric columns the classifier uses, in [`COLUMNS`] order.
pub fn feature_names() -> Vec<&'static str> {
    COLUMNS
        .iter()
        .copied()
        .filter(|c| !GRID_COLUMNS.contains(c))
        .collect()
}

/// `np.percentile` with linear interpolation of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = (sorted.len() - 1) as f64 * q;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

/// The feature matrix: every row's metrics (in [`COLUMNS`] order) scaled within its
/// group as MRIQC's site-wise robust scaler does, `(x - median) / IQR` (the IQR taken
/// as 1 where it is 0), and a missing or non-finite value set to the group's median,
/// 0 after scaling. Groups are scaled on their own images, labels unused.
pub fn scaled_features(rows: &[(&str, &[Option<f64>])]) -> Vec<Vec<f64>> {
    let keep: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .filter(|(_, c)| !GRID_COLUMNS.contains(c))
        .map(|(i, _)| i)
        .collect();
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (r, (group, _)) in rows.iter().enumerate() {
        groups.entry(group).or_default().push(r);
    }
    let mut out = vec![vec![0.0; keep.len()]; rows.len()];
    for members in groups.values() {
        for (f, &column) in keep.iter().enumerate() {
            let value = |r: usize| {
                rows[r]
                    .1
                    .get(column)
                    .copied()
                    .flatten()
                    .filter(|v| v.is_finite())
            };
            let mut present: Vec<f64> = members.iter().filter_map(|&r| value(r)).collect();
            if present.is_empty() {
                continue;
            }
            present.sort_by(f64::total_cmp);
            let median = percentile(&present, 0.5);
            let iqr = percentile(&present, 0.75) - percentile(&present, 0.25);
            let spread = if iqr > 0.0 { iqr } else { 1.0 };
            for &r in members {
                out[r][f] = value(r).map_or(0.0, |v| (v - median) / spread);
            }
        }
    }
    out
}

/// Grows the forest on `train` (feature rows and class indices) and gives each row of
/// `predict` its class probabilities over `classes` classes: the share of trees voting
/// for each. Every tree is smartcore's random-forest tree (a bootstrap sample, a
/// random subset of features at each split) grown with a seed of its own, so the same
/// seed grows the same forest.
pub fn fit_predict(
    train: &[Vec<f64>],
    labels: &[usize],
    predict: &[Vec<f64>],
    classes: usize,
    config: &ForestConfig,
) -> Result<Vec<Vec<f64>>, ForestError> {
    if train.is_empty() {
        return Err(ForestError::NoTraining);
    }
    if predict.is_empty() {
        return Ok(Vec::new());
    }
    let fit_error = |e: smartcore::error::Failed| ForestError::Fit(e.to_string());
    let x = DenseMatrix::from_2d_vec(&train.to_vec()).map_err(fit_error)?;
    let y: Vec<u32> = labels.iter().map(|&c| c as u32).collect();
    let queries = DenseMatrix::from_2d_vec(&predict.to_vec()).map_err(fit_error)?;
    let mut votes = vec![vec![0.0f64; classes]; predict.len()];
    let trees = config.trees.max(1);
    for t in 0..trees {
        let params = RandomForestClassifierParameters::default()
            .with_n_trees(1)
            .with_seed(
                config
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(u64::from(t)),
            );
        let tree: RandomForestClassifier<f64, u32, DenseMatrix<f64>, Vec<u32>> =
            RandomForestClassifier::fit(&x, &y, params).map_err(fit_error)?;
        let predicted = tree.predict(&queries).map_err(fit_error)?;
        for (row, class) in votes.iter_mut().zip(predicted) {
            if let Some(v) = row.get_mut(class as usize) {
                *v += 1.0;
            }
        }
    }
    for row in &mut votes {
        row.iter_mut().for_each(|v| *v /= f64::from(trees));
    }
    Ok(votes)
}

/// Scanner groups with fewer images than this are scaled together as one group: a
/// median and IQR of a handful of images say little about the scanner.
pub const MIN_GROUP_IMAGES: usize = 10;

/// The name scanner groups smaller than [`MIN_GROUP_IMAGES`] are pooled under.
pub const POOLED_GROUP: &str = "(small scanner groups)";

/// Each image's scaling group, the small groups pooled into [`POOLED_GROUP`].
pub fn pooled_groups(groups: &[String]) -> Vec<String> {
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for g in groups {
        *sizes.entry(g).or_default() += 1;
    }
    groups
        .iter()
        .map(|g| {
            if sizes[g.as_str()] >= MIN_GROUP_IMAGES {
                g.clone()
            } else {
                POOLED_GROUP.to_string()
            }
        })
        .collect()
}

/// Mixes a network's class probabilities with the forest's: `(1 - weight) * network
/// + weight * forest`, class by class (both sum to 1, so the mix does too).
pub fn blend(network: &[f64], forest: &[f64], weight: f64) -> Vec<f64> {
    network
        .iter()
        .zip(forest)
        .map(|(n, f)| (1.0 - weight) * n + weight * f)
        .collect()
}

/// A forest that travels with an exported model, kept as what grows it: its scaled
/// training rows and their classes. It is grown again, seeded, where it predicts, so
/// the same file always grows the same trees (smartcore's trees have no stable file
/// format, and 600 rows of 60 metrics are 300 kB where 200 trees would be megabytes).
#[derive(Debug, Clone, PartialEq)]
pub struct PortableForest {
    pub features: Vec<Vec<f64>>,
    pub labels: Vec<usize>,
    pub classes: usize,
    pub config: ForestConfig,
}

impl PortableForest {
    /// Class probabilities of each row (rows scaled as the training rows were).
    pub fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, ForestError> {
        fit_predict(
            &self.features,
            &self.labels,
            rows,
            self.classes,
            &self.config,
        )
    }

    /// The training rows and classes as a safetensors file (`features` f64 [n, f],
    /// `labels` i64 [n]), written with the `safetensors` crate that `tch` uses, so the
    /// bytes are those `tch::Tensor::write_safetensors` writes (tested) and reading a
    /// model's forest does not need libtorch.
    pub fn write(&self, path: &std::path::Path) -> Result<(), ForestError> {
        use safetensors::tensor::{Dtype, TensorView};
        let width = self.features.first().map_or(0, Vec::len);
        if self.features.is_empty() || self.features.iter().any(|r| r.len() != width) {
            return Err(ForestError::NoTraining);
        }
        let features: Vec<u8> = self
            .features
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let labels: Vec<u8> = self
            .labels
            .iter()
            .flat_map(|&l| (l as i64).to_le_bytes())
            .collect();
        let failed = |e: safetensors::SafeTensorError| {
            ForestError::Fit(format!("writing {}: {e}", path.display()))
        };
        let features = TensorView::new(Dtype::F64, vec![self.features.len(), width], &features)
            .map_err(failed)?;
        let labels =
            TensorView::new(Dtype::I64, vec![self.labels.len()], &labels).map_err(failed)?;
        safetensors::serialize_to_file([("features", features), ("labels", labels)], &None, path)
            .map_err(failed)
    }

    /// Reads what [`Self::write`] wrote; `width` is the number of metrics expected.
    pub fn read(
        path: &std::path::Path,
        width: usize,
        classes: usize,
        config: ForestConfig,
    ) -> Result<Self, ForestError> {
        use safetensors::tensor::Dtype;
        let bad = |detail: String| ForestError::File(format!("{}: {detail}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let tensors =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let get = |name: &str| {
            tensors
                .tensor(name)
                .map_err(|_| bad(format!("no tensor {name:?}")))
        };
        let features = get("features")?;
        let labels = get("labels")?;
        let size = features.shape().to_vec();
        if size.len() != 2 || size[1] != width || size[0] < 1 {
            return Err(bad(format!(
                "features of shape {size:?}, expected [n, {width}]"
            )));
        }
        if features.dtype() != Dtype::F64 || labels.dtype() != Dtype::I64 {
            return Err(bad("features must be f64 and labels i64".into()));
        }
        if labels.shape() != [size[0]] {
            return Err(bad(format!(
                "{:?} labels for {} rows",
                labels.shape(),
                size[0]
            )));
        }
        // The crate checked that each tensor's bytes match its shape and type.
        let eight = |chunk: &[u8]| <[u8; 8]>::try_from(chunk).unwrap_or_default();
        let flat: Vec<f64> = features
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(eight(c)))
            .collect();
        let labels: Vec<i64> = labels
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(eight(c)))
            .collect();
        if let Some(l) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
            return Err(bad(format!("label {l} is not one of {classes} classes")));
        }
        if flat.iter().any(|v| !v.is_finite()) {
            return Err(bad("a feature is not finite".into()));
        }
        Ok(Self {
            features: flat.chunks(width).map(<[f64]>::to_vec).collect(),
            labels: labels.into_iter().map(|l| l as usize).collect(),
            classes,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_per_group_and_fills_gaps_with_the_median() {
        let n = COLUMNS.len();
        let a: Vec<Vec<Option<f64>>> = (0..5).map(|i| vec![Some(f64::from(i)); n]).collect();
        let mut b: Vec<Vec<Option<f64>>> = (0..5)
            .map(|i| vec![Some(100.0 + 10.0 * f64::from(i)); n])
            .collect();
        b[0][0] = None;
        let rows: Vec<(&str, &[Option<f64>])> = a
            .iter()
            .map(|v| ("A", v.as_slice()))
            .chain(b.iter().map(|v| ("B", v.as_slice())))
            .collect();
        let x = scaled_features(&rows);
        assert_eq!(x[0].len(), feature_names().len());
        // Group A: median 2, IQR 2; group B: median 120, IQR 20.
        assert_eq!(x[0][1], -1.0);
        assert_eq!(x[9][1], 1.0);
        assert_eq!(x[5][0], 0.0, "a missing value sits at the median");
    }

    #[test]
    fn the_forest_separates_two_clusters_and_repeats_itself() {
        let train: Vec<Vec<f64>> = (0..40)
            .map(|i| {
                let side = if i % 2 == 0 { -1.0 } else { 1.0 };
                vec![side + f64::from(i) * 1e-3, 2.0 * side]
            })
            .collect();
        let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let queries = vec![vec![-1.2, -2.0], vec![1.3, 2.0]];
        let config = ForestConfig { trees: 25, seed: 7 };
        let p = fit_predict(&train, &labels, &queries, 2, &config).expect("fits");
        assert!(p[0][0] > 0.9 && p[1][1] > 0.9, "{p:?}");
        assert!((p[0][0] + p[0][1] - 1.0).abs() < 1e-12);
        assert_eq!(
            p,
            fit_predict(&train, &labels, &queries, 2, &config).expect("fits")
        );
    }

    #[test]
    fn small_scanner_groups_are_pooled() {
        let mut groups: Vec<String> = vec!["A".into(); MIN_GROUP_IMAGES];
        groups.extend(vec!["B".to_string(); 3]);
        groups.push("C".into());
        let pooled = pooled_groups(&groups);
        assert!(pooled[..MIN_GROUP_IMAGES].iter().all(|g| g == "A"));
        assert!(pooled[MIN_GROUP_IMAGES..].iter().all(|g| g == POOLED_GROUP));
    }

    #[test]
    fn blending_weighs_the_two_and_keeps_a_distribution() {
        let p = blend(&[0.8, 0.2], &[0.2, 0.8], 0.25);
        assert!(
            (p[0] - 0.65).abs() < 1e-12 && (p[1] - 0.35).abs() < 1e-12,
            "{p:?}"
        );
        assert_eq!(blend(&[0.8, 0.2], &[0.1, 0.9], 1.0), vec![0.1, 0.9]);
    }

    #[test]
    fn a_portable_forest_reads_back_as_written_and_predicts_the_same() {
        let features: Vec<Vec<f64>> = (0..30)
            .map(|i| vec![f64::from(i % 3), f64::from(i) * 0.1, -1.5])
            .collect();
        let labels: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let config = ForestConfig { trees: 9, seed: 4 };
        let forest = PortableForest {
            features,
            labels,
            classes: 3,
            config,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.safetensors");
        forest.write(&path).expect("write");
        let read = PortableForest::read(&path, 3, 3, config).expect("read");
        assert_eq!(read, forest);
        let queries = vec![vec![0.0, 1.0, -1.5], vec![2.0, 0.5, -1.5]];
        assert_eq!(
            read.predict(&queries).expect("predict"),
            forest.predict(&queries).expect("predict")
        );
        // Another width of rows, or a label past the classes, is named.
        let err = PortableForest::read(&path, 4, 3, config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.safetensors") && err.contains("[n, 4]"),
            "{err}"
        );
        let err = PortableForest::read(&path, 3, 2, config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 2 is not one of 2 classes"), "{err}");
        std::fs::write(&path, b"not a safetensors file").expect("write");
        assert!(PortableForest::read(&path, 3, 3, config).is_err());
    }

    /// Forests were written by tch before: the file is byte for byte the one tch writes
    /// for the same tensors, and each side reads what the other wrote.
    #[test]
    fn a_forest_file_is_the_one_tch_writes_and_reads() {
        let features: Vec<Vec<f64>> = (0..7)
            .map(|i| vec![f64::from(i) * 0.25 - 1.0, f64::from(i * i), 3.5])
            .collect();
        let labels: Vec<usize> = (0..7).map(|i| i % 2).collect();
        let config = ForestConfig { trees: 3, seed: 1 };
        let forest = PortableForest {
            features: features.clone(),
            labels: labels.clone(),
            classes: 2,
            config,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = dir.path().join("ours.safetensors");
        forest.write(&ours).expect("write");

        let flat: Vec<f64> = features.iter().flatten().copied().collect();
        let by_tch = dir.path().join("tch.safetensors");
        let t_features = tch::Tensor::from_slice(&flat).reshape([7, 3]);
        let t_labels =
            tch::Tensor::from_slice(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>());
        tch::Tensor::write_safetensors(
            &[("features", &t_features), ("labels", &t_labels)],
            &by_tch,
        )
        .expect("tch writes");
        assert_eq!(
            std::fs::read(&ours).expect("read"),
            std::fs::read(&by_tch).expect("read")
        );
        assert_eq!(
            PortableForest::read(&by_tch, 3, 2, config).expect("read"),
            forest
        );
        let read_by_tch = tch::Tensor::read_safetensors(&ours).expect("tch reads");
        let get = |name: &str| {
            read_by_tch
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .expect("tensor")
        };
        assert_eq!(
            Vec::<f64>::try_from(get("features").reshape([-1])).expect("f64"),
            flat
        );
        assert_eq!(get("labels").size(), [7]);
    }
}
