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
            eprintln!("Error: {}", one_line(&e));
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

/// The error and its causes on one line, each cause once: many errors already name their
/// cause in their own message (`store: <the sled error>`), which `{:#}` would repeat.
fn one_line(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !last.contains(&cause) {
            text += ": ";
            text += &cause;
        }
        last = cause;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use anyhow::Context;

    #[test]
    fn each_cause_is_named_once() {
        // An error that names its cause in its message and also gives it as its source.
        #[derive(Debug, thiserror::Error)]
        #[error("read k.pem: {source}")]
        struct Read {
            source: std::io::Error,
        }
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let named = Err::<(), _>(Read { source })
            .context("load the JWT keys")
            .unwrap_err();
        assert_eq!(
            one_line(&named),
            "load the JWT keys: read k.pem: no such file"
        );
        let chained = Err::<(), _>(std::io::Error::other("disk gone"))
            .context("open the store")
            .unwrap_err();
        assert_eq!(one_line(&chained), "open the store: disk gone");
    }
}
