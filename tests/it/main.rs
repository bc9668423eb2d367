//! Integration tests: the library on real files and the real `cdwqc` binary.

/// Lets the fuzz test see the largest allocation each case makes.
#[global_allocator]
static ALLOCATOR: cdwqc::import::fuzz::LargestAllocation = cdwqc::import::fuzz::LargestAllocation;

mod attacks;
mod binaries;
mod calibration;
mod dawid_skene;
mod ecosystem;
mod fuzz;
mod imaging;
mod import;
mod inference_pipeline;
mod interrupt;
mod iqm;
mod metrics_properties;
mod metrics_reference;
mod model_export;
mod model_recipes;
mod model_training;
mod native_roundtrip;
mod notebook_roundtrip;
mod preprocess_orientation;
mod rating;
mod registration;
mod report;
mod sharded_import;
mod slurm;
mod sql;
mod store;
mod support;
mod synth;
mod torchscript_inference;
mod train;
mod tui;
