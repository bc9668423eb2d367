//! The SSDA quality-control network: presets, architecture, data pipeline, training
//! and inference.
pub mod augment;
pub mod card;
pub mod data;
pub mod grl;
pub mod infer;
pub mod iqm_forest;
pub mod network;
pub mod pipeline;
pub mod preset;
pub mod recipe;
pub mod split;
pub mod train;

use std::path::PathBuf;

/// Why a model operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("data: {0}")]
    Data(String),
}

impl From<crate::replace::ReplaceError> for ModelError {
    fn from(e: crate::replace::ReplaceError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// The device as `parse_device` spells it ("cpu", "cuda:0"), for people and job logs.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        tch::Device::Mps => "mps".into(),
        tch::Device::Vulkan => "vulkan".into(),
    }
}

/// Picks the compute device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
/// libtorch's CUDA library is loaded first (see `crate::device`), so a full torch
/// install is used whenever it is there.
pub fn parse_device(name: &str) -> Result<tch::Device, ModelError> {
    let cuda = |device: tch::Device| {
        crate::device::load_cuda().map_err(ModelError::Config)?;
        Ok(device)
    };
    match name {
        "auto" => Ok(if crate::device::cuda_available() {
            tch::Device::Cuda(0)
        } else {
            tch::Device::Cpu
        }),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => cuda(tch::Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "device {other:?}: expected auto, cpu, cuda or cuda:N"
                ))
            })
            .and_then(cuda),
    }
}
