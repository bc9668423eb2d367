//! Compute device choice: the CPU, or a CUDA GPU when libtorch's CUDA library loads.
//!
//! The binary is linked against libtorch's CPU library only, so it starts on machines
//! whose torch install has no CUDA libraries (the minimal CPU install). Where the full
//! install is present, `libtorch_cuda.so` is loaded at run time before libtorch is asked
//! about GPUs, and the same binary trains and infers on CUDA.

use std::sync::OnceLock;

/// Which device a command should compute on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// CUDA when a GPU is usable, else the CPU.
    Auto,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device cuda: {0}")]
    NoCuda(String),
}

/// Loads libtorch's CUDA library once; `Err` says why CUDA cannot be used.
pub fn load_cuda() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // dlopen searches the executable's RUNPATH, which points at libtorch.
            let name = c"libtorch_cuda.so";
            // SAFETY: a constant NUL-terminated name; the handle is deliberately kept
            // open for the life of the process.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a thread-local C string or NULL.
                let reason = unsafe {
                    let e = libc::dlerror();
                    if e.is_null() {
                        "unknown error".to_string()
                    } else {
                        std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
                    }
                };
                Err(format!("libtorch's CUDA library does not load ({reason})"))
            } else {
                Ok(())
            }
        })
        .clone()
}

/// Whether a CUDA GPU is usable from this process.
pub fn cuda_available() -> bool {
    load_cuda().is_ok() && tch::Cuda::is_available()
}

/// Resolves a choice to a libtorch device.
pub fn resolve(choice: DeviceChoice) -> Result<tch::Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Auto => Ok(if cuda_available() {
            tch::Device::Cuda(0)
        } else {
            tch::Device::Cpu
        }),
        DeviceChoice::Cuda => {
            load_cuda().map_err(DeviceError::NoCuda)?;
            if tch::Cuda::is_available() {
                Ok(tch::Device::Cuda(0))
            } else {
                Err(DeviceError::NoCuda(
                    "libtorch finds no CUDA GPU on this machine".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_auto_resolves() {
        assert_eq!(resolve(DeviceChoice::Cpu).ok(), Some(tch::Device::Cpu));
        let auto = resolve(DeviceChoice::Auto).expect("auto never fails");
        assert_eq!(auto.is_cuda(), cuda_available());
        if !cuda_available() {
            let err = resolve(DeviceChoice::Cuda).unwrap_err().to_string();
            assert!(err.starts_with("--device cuda:"), "{err}");
        }
    }
}
