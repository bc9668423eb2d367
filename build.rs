//! Embeds run-time search paths for the native libraries that setup installs.
use std::path::PathBuf;

fn main() {
    for var in ["DUCKDB_LIB_DIR", "LIBTORCH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let mut dirs = Vec::new();
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(dir) = std::env::var("LIBTORCH") {
        dirs.push(PathBuf::from(dir).join("lib"));
    }
    for dir in dirs {
        // Canonical paths keep the binary working when started from any directory.
        let dir = dir.canonicalize().unwrap_or(dir);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
