//! The `smtpgate` command: parses the command line, sets up logging and
//! turns errors into one-line messages.

use std::process::ExitCode;

use clap::Parser;
use smtpgate::{
    cli::{args as cli, commands, logging},
    gate::errno,
};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("smtpgate: error: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    logging::init(cli.verbose);
    match commands::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            match errno::hint(&err) {
                Some(hint) => eprintln!("smtpgate: error: {err:#} ({hint})"),
                None => eprintln!("smtpgate: error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
