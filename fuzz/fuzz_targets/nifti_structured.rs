//! libFuzzer picks (seed, case) pairs of the structured mutator; every reader must
//! return a value or a typed error.
#![no_main]

use std::path::Path;

use cdwqc::import::fuzz::{self, FuzzConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: [u8; 16]| {
    let seeds = fuzz::builtin_seeds();
    let config = FuzzConfig {
        seed: u64::from_le_bytes(data[..8].try_into().unwrap_or_default()),
        bomb_bytes: 16 << 20,
        ..FuzzConfig::default()
    };
    let index = u64::from_le_bytes(data[8..].try_into().unwrap_or_default());
    let case = fuzz::make_case(&config, &seeds, index);
    if let Err(finding) = fuzz::run_case(&config, &case, Path::new("/nonexistent/cdwqc-fuzz")) {
        panic!("{finding:#?}");
    }
});
