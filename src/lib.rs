//! cdwqc: quality control of brain MRIs in hospital clinical data warehouses.
//!
//! Data flows import -> store -> rate -> train -> infer -> report -> tui; `imaging`
//! (reading NIfTI), `query` (ad-hoc SQL) and `replace` (files replaced whole) serve
//! them.

pub mod cli;
pub mod cluster;
pub mod commands;
pub mod device;
pub mod display;
pub mod imaging;
pub mod import;
pub mod jobs;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod query;
pub mod rate;
pub mod regular;
pub mod replace;
pub mod report;
pub mod store;
pub mod synth;
pub mod tui;
