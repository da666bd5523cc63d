use std::process::ExitCode;

use clap::Parser;
use lm_ingest::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        die_quietly_on_closed_pipe();
    }
    lm_ingest::cli::run(cli)
}

/// Rust ignores SIGPIPE, so a one-shot command whose reader went away (`| head`) would panic
/// in `println!`. Those commands get the Unix default back: end without a word, like `cat`.
/// The server keeps ignoring it: a client hanging up must never stop it.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
