//! The `radsight` command: parses the command line, builds the async runtime and hands over to
//! [`radsight::cli::run`]; an error becomes `error: …` (with its causes) and exit code 1.
//!
//! `radsight serve` runs the service on its embedded defaults (SQLite at ./data/radsight.db,
//! port 8080); `radsight --help` lists the rest. The commands live in `src/cli/`.

use std::process::ExitCode;

use clap::Parser;
use radsight::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let outcome = runtime.block_on(radsight::cli::run(cli));
    // A model still running on a blocking thread (its job already handed back at shutdown)
    // must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}
