//! The `idol` binary: parse arguments, run the command, turn errors into a message and an exit code.
//! The commands live in `cli/` (part of the binary, not the library), one file each.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::report(&e));
            ExitCode::from(2)
        }
    }
}
