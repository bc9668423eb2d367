//! The NIfTI fuzzer as a test: a bounded, seeded run of hostile files through every
//! reader (header only, the import's per-file analysis, viewer slices, preprocessing),
//! and the rows it produces written to a real store.

use cdwqc::import::fuzz::{self, FuzzConfig};
use cdwqc::store::Store;

use crate::support::repo;

/// Enough cases to draw every mutation many times over; a few seconds in release.
const CASES: u64 = 2500;

#[test]
fn hostile_nifti_files_give_typed_errors_never_panics_or_absurd_allocations() {
    assert!(
        fuzz::allocation_probe_installed(),
        "the test binary must install fuzz::LargestAllocation as its global allocator"
    );
    let mut seeds = fuzz::builtin_seeds();
    // Real files when present (scripts/setup.sh); the built-in seeds suffice without.
    seeds.extend(fuzz::seeds_from(&[
        repo().join("tests/data/qform_oblique.nii.gz"),
        repo().join("tests/data/external"),
    ]));
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("warehouse");
    let config = FuzzConfig {
        seed: 20_261_128,
        bomb_bytes: 16 << 20,
        ..FuzzConfig::default()
    };
    let mut writes = Vec::new();
    // Writing to the store dominates the run time; a fifth of the cases still carry
    // every kind of hostile text and number to it.
    let summary = fuzz::run_range(&config, &seeds, &root, 0..CASES, |index, write| {
        if index % 5 == 0 {
            writes.push(write)
        }
    });
    assert!(
        summary.findings.is_empty(),
        "{} of {} cases crashed or allocated absurdly; first ones:\n{:#?}",
        summary.findings.len(),
        summary.cases,
        &summary.findings[..summary.findings.len().min(5)]
    );
    assert_eq!(summary.cases, CASES);
    // The run reaches both outcomes and many distinct reasons, or it proves little.
    assert!(summary.imported > CASES / 10, "{summary:#?}");
    assert!(summary.failed > CASES / 3, "{summary:#?}");
    assert!(summary.reasons.len() >= 10, "{:#?}", summary.reasons);
    for expected in [
        "corrupt gzip stream",
        "gzip stream inflates past",
        "truncated",
    ] {
        assert!(
            summary.reasons.keys().any(|k| k.starts_with(expected)),
            "no {expected:?} among {:#?}",
            summary.reasons
        );
    }

    // Every row the import would write fits the schema.
    let mut store = Store::create(&tmp.path().join("fuzz.duckdb")).expect("store");
    for batch in writes.chunks(500) {
        if let Err(e) = store.apply_image_writes(batch) {
            let culprit = batch
                .iter()
                .find(|w| store.apply_image_writes(std::slice::from_ref(*w)).is_err());
            panic!("the store refused a batch: {e}\nfirst refused write: {culprit:#?}");
        }
    }
}
