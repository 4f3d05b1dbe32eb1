//! The `streamscore` command: parse, set up logging, run the command line
//! (`cli/`), print the error chain once, exit non-zero on failure.

use std::process::ExitCode;

use clap::Parser;

use streamscore::cli::{Cli, execute};
use streamscore::error::Chain;

// mimalloc, not glibc's malloc: the state path allocates keys and values
// per window key and batch (Cargo.toml says what it saved).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "streamscore=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for people: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let error: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("error: {}", Chain(error));
            ExitCode::FAILURE
        }
    }
}
