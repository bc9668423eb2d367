//! Integration tests: the library on real files and the real `cdwqc` binary.

mod imaging;
mod import;
mod interrupt;
mod metrics_properties;
mod metrics_reference;
mod native_roundtrip;
mod notebook_roundtrip;
mod report;
mod sql;
mod store;
mod support;
