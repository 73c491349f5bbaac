//! What every example program shares.

use std::process::ExitCode;

/// Runs `body` and turns an error into one line on stderr (the whole cause chain, outermost
/// first) and a failing exit code, instead of a multi-line report or a panic.
pub fn run_main(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
