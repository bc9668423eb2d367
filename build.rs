//! Embeds run-time search paths for the native libraries that setup installs, and keeps
//! libtorch out of the `cdwqc` binary.
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
    // Symbols of static archives (torch-sys's C++ glue among them) stay local to the
    // `cdwqc` binary. Otherwise the linker exports the glue's inline functions, which
    // libtorch also defines, and that keeps the glue, and so libtorch, linked although no
    // code of this binary calls it. `cdwqc-torch` links libtorch as usual.
    println!("cargo:rustc-link-arg-bin=cdwqc=-Wl,--exclude-libs,ALL");
}
