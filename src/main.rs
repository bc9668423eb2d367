//! The `cdwqc` command: parse the command line, run, map errors to exit codes.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cdwqc::cli::Cli::parse();
    if cli.command.ends_quietly_on_a_closed_pipe() {
        // SAFETY: sets a signal disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cdwqc::commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", message(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the message
/// already carries (library errors embed their source in their own message).
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
