//! The `sluice` binary: parse the command line (`src/cli/`), run the
//! command, turn an error into a message on stderr and exit status 1.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined with `: `, leaving out a cause whose text
/// the message already contains (many errors repeat their source).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_causes_are_shown_once() {
        let io = std::io::Error::other("Address already in use");
        let error = anyhow::Error::new(io)
            .context("cannot listen on 127.0.0.1:9293: Address already in use")
            .context("sluice serve stopped");
        assert_eq!(
            error_chain(&error),
            "sluice serve stopped: cannot listen on 127.0.0.1:9293: Address already in use"
        );
    }
}
