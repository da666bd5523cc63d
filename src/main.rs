use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lm_ingest::cli::run(lm_ingest::cli::Cli::parse())
}
