//! The `nsgflow` binary: parse arguments, validate them into a `Config`, run, and print an
//! error as one line with its context chain.

use clap::Parser;
use nsgflow::app::{self, exit};
use nsgflow::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nsgflow: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    match app::run(config) {
        Ok(code) => code,
        Err(e) => {
            // Runtime failures (an unusable output location, a failed write, partials that
            // cannot be merged) are environment errors, not "nothing read".
            eprintln!("nsgflow: {e:#}");
            ExitCode::from(exit::USAGE)
        }
    }
}
