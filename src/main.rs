//! The `placard` binary: parse the command line, run, print the error once, and map
//! the outcome to a documented exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match placard::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and exit 0; a command line clap cannot read is bad
        // input like any other (exit 3, not clap's 2, which placard's plan uses for
        // "changes pending").
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let _ = error.print();
            eprintln!("the command line is not one placard reads; no host was contacted");
            return ExitCode::from(placard::commands::Exit::InvalidInput as u8);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("PLACARD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    match placard::commands::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            if let Some(invalid) = error.downcast_ref::<placard::error::InvalidInput>() {
                eprintln!("{invalid}");
                return ExitCode::from(placard::commands::Exit::InvalidInput as u8);
            }
            eprintln!("error: {error:#}");
            ExitCode::from(placard::commands::Exit::Failed as u8)
        }
    }
}
