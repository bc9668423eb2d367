//! The two binaries: `cdwqc` starts without libtorch and hands the commands that need it
//! to `cdwqc-torch`, with the same arguments, name, streams and exit code.

use std::process::Command;

use crate::support::{cdwqc, failure, ok, stderr, stdout};

/// The shared libraries the dynamic loader maps for a binary, as `ldd` lists them
/// (glibc's loader prints them and exits when this variable is set).
fn loaded_libraries(binary: &str) -> String {
    let o = Command::new(binary)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .expect("the binary runs");
    assert!(
        o.status.success(),
        "listing the libraries of {binary}: {o:?}"
    );
    stdout(&o)
}

#[test]
fn cdwqc_does_not_load_libtorch_and_cdwqc_torch_does() {
    let front = loaded_libraries(env!("CARGO_BIN_EXE_cdwqc"));
    assert!(front.contains("libduckdb.so"), "{front}");
    assert!(
        !front.contains("libtorch") && !front.contains("libc10"),
        "cdwqc loads libtorch: a command it runs reaches code that calls libtorch; \
         hand that command to cdwqc-torch (Command::needs_libtorch)\n{front}"
    );
    let torch = loaded_libraries(env!("CARGO_BIN_EXE_cdwqc-torch"));
    assert!(torch.contains("libtorch_cpu.so"), "{torch}");
}

#[test]
fn a_command_that_needs_libtorch_runs_in_cdwqc_torch_under_the_cdwqc_name() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init"]);
    let info = ok(dir.path(), &["info"]);
    assert!(info.contains("libtorch"), "{info}");

    // A usage error is clap's, named as the user typed it, with clap's exit code.
    let o = cdwqc(dir.path(), &["train", "--no-such-option"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("Usage: cdwqc train"), "{err}");
    assert!(!err.contains("cdwqc-torch"), "{err}");

    // The command's own failure and exit code come back as they are.
    let err = failure(&cdwqc(
        dir.path(),
        &["infer", "--model", "no-such-model", "--sequence", "FLAIR"],
    ));
    assert!(err.contains("no-such-model"), "{err}");
}

#[test]
fn cdwqc_without_cdwqc_torch_beside_it_runs_the_rest_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("cdwqc");
    std::fs::copy(env!("CARGO_BIN_EXE_cdwqc"), &alone).unwrap();
    let run = |args: &[&str]| {
        Command::new(&alone)
            .args(args)
            .current_dir(dir.path())
            .env_remove("CDWQC_DB")
            .output()
            .unwrap()
    };
    let o = run(&["init"]);
    assert!(o.status.success(), "{o:?}");
    let o = run(&["sql", "select 40 + 2 as answer"]);
    assert!(stdout(&o).contains("42"), "{o:?}");

    let o = run(&["info"]);
    let err = failure(&o);
    assert!(
        err.contains("cdwqc-torch") && err.contains("keep them together"),
        "{err}"
    );
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}
