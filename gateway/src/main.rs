//! The `kiri` command: parse the arguments, then run what they ask for (`cli/`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if !cli.is_gateway() {
        // A tool whose output goes into `head` or `grep -q` ends quietly when the reader does,
        // as Unix tools do, instead of panicking on a broken pipe. (The gateway itself keeps
        // ignoring SIGPIPE: a peer that goes away is an error on that connection only.)
        // SAFETY: called before any thread starts; SIG_DFL is a valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; never a backtrace, whatever RUST_BACKTRACE says.
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
