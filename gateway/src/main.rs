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
    one_malloc_arena();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; never a backtrace, whatever RUST_BACKTRACE says.
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's allocator gives threads arenas of their own (up to eight per core), and memory
/// freed in one stays there: with sixteen function lanes at 10,000 events a second that
/// was about 10 MB more resident than with one arena, and one arena cost no throughput
/// (BENCHMARKS.md). musl's allocator, the device build's, has a single lock anyway. A
/// `MALLOC_ARENA_MAX` in the environment wins.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any thread starts; M_ARENA_MAX takes a count.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
