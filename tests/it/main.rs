//! Integration tests: the library on real files and the real `cdwqc` binary.

mod imaging;
mod import;
mod interrupt;
mod sql;
mod store;
mod support;
mod tui;
