//! WASI preview 1 for functions, through `wasmi_wasi`: modules built for `wasm32-wasip1` (Rust
//! with std, C with wasi-libc, AssemblyScript's WASI shim) load as reactors beside the `kiri`
//! imports. Capabilities are off: no preopened directories (opening a file fails with `EBADF`
//! or `ENOTCAPABLE`), no sockets, no environment variables, no arguments, an empty stdin.
//! Clocks and random numbers work. Stdout and stderr become the function's log lines (info and
//! warn), bounded like `log`. `poll_oneoff` (sleeping, waiting) traps: a function must not
//! block. `proc_exit` ends the invocation (reason `exit`) and the instance.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kiri_abi::level;
use wasmi::{Caller, Error, Linker};
use wasmi_wasi::wasi_common::pipe::{ReadPipe, WritePipe};
use wasmi_wasi::{WasiCtx, WasiCtxBuilder};

use super::{HostState, LogSink, MAX_LOG_BYTES};

/// The import module of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// The functions of WASI preview 1 that `wasmi_wasi` defines (all of them).
pub const FUNCTIONS: [&str; 46] = [
    "args_get",
    "args_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "environ_get",
    "environ_sizes_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "random_get",
    "sched_yield",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// A WASI call the gateway does not serve.
#[derive(Debug)]
pub struct NotOffered(&'static str);

impl std::fmt::Display for NotOffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl wasmi::errors::HostError for NotOffered {}

/// Registers WASI preview 1 in `linker`, `poll_oneoff` replaced by a trap.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<(), Error> {
    wasmi_wasi::add_to_linker(linker, |s: &mut HostState| &mut s.wasi)
        .map_err(|e| Error::new(format!("WASI: {e}")))?;
    linker.allow_shadowing(true);
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32| -> Result<i32, Error> {
            Err(Error::host(NotOffered(
                "WASI poll_oneoff (sleeping or waiting) is not offered: a function must not block",
            )))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI context of one instance, its stdout and stderr written to `log`.
pub fn context(log: &Arc<LogSink>) -> WasiCtx {
    let stream = |lvl| {
        Box::new(WritePipe::new(Stream {
            log: log.clone(),
            level: lvl,
            partial: Arc::new(Mutex::new(Vec::new())),
        }))
    };
    WasiCtxBuilder::new()
        .stdin(Box::new(ReadPipe::from(Vec::<u8>::new())))
        .stdout(stream(level::INFO))
        .stderr(stream(level::WARN))
        .build()
}

/// Stdout or stderr: complete lines go to the log as they are written; a line longer than
/// [`MAX_LOG_BYTES`] is cut there.
struct Stream {
    log: Arc<LogSink>,
    level: i32,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut partial = self.partial.lock().expect("stdio lock");
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            let room = MAX_LOG_BYTES.saturating_sub(partial.len());
            partial.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.ends_with(b"\n") || partial.len() >= MAX_LOG_BYTES {
                let line = partial.strip_suffix(b"\n").unwrap_or(&partial);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.log.line(self.level, line);
                partial.clear();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut partial = self.partial.lock().expect("stdio lock");
        if !partial.is_empty() {
            self.log.line(self.level, &partial);
            partial.clear();
        }
        Ok(())
    }
}
