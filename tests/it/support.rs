//! Shared helpers: paths to test data, running the binary, writing NIfTI bytes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Real NIfTI files extracted by scripts/setup.sh. Missing files fail the test:
/// run scripts/setup.sh first.
pub fn external(name: &str) -> PathBuf {
    let p = repo().join("tests/data/external").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh to fetch the test images",
        p.display()
    );
    p
}

pub fn cdwqc(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(args)
        .current_dir(dir)
        .env_remove("CDWQC_DB")
        .output()
        .expect("the cdwqc binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary and fails the test with its output unless it succeeds.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = cdwqc(dir, args);
    assert!(
        o.status.success(),
        "cdwqc {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A minimal little-endian NIfTI-1 single file.
pub fn nifti1(dim: [i16; 8], datatype: i16, bitpix: i16, vox_offset: f32, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in dim.iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&datatype.to_le_bytes());
    h[72..74].copy_from_slice(&bitpix.to_le_bytes());
    for i in 0..4 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1.0f32.to_le_bytes());
    }
    h[108..112].copy_from_slice(&vox_offset.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(data);
    h
}

pub fn float_volume(n: [i16; 3], f: impl Fn(usize) -> f32) -> Vec<u8> {
    let count = n.iter().map(|&d| d as usize).product::<usize>();
    let data: Vec<u8> = (0..count).flat_map(|i| f(i).to_le_bytes()).collect();
    nifti1([3, n[0], n[1], n[2], 1, 1, 1, 1], 16, 32, 352.0, &data)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
