//! Raw bytes as a `.nii` file: header reading and the import's per-file analysis must
//! return, never panic.
#![no_main]

use std::path::Path;

use cdwqc::imaging::nifti;
use cdwqc::import::analyse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/nonexistent/cdwqc-fuzz/case.nii");
    let _ = nifti::read_header(path, data);
    let _ = nifti::decode_file_bytes(path, data);
    let outcome = analyse::analyse_bytes(path, Path::new("/nonexistent/cdwqc-fuzz"), data, None);
    if let analyse::Outcome::Failed { reason, .. } = outcome {
        assert!(!reason.starts_with(analyse::PANIC_REASON), "{reason}");
    }
});
