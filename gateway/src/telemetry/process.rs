//! The standard `process_*` metrics of Prometheus clients, read from `/proc/self` each time
//! `/metrics` is scraped and written after the gateway's own: CPU seconds, resident and virtual memory, open and maximum file
//! descriptors, and the start time. Read here in a few lines rather than through a crate: the
//! one made for it (`metrics-process`) brings `procfs`, and the device build has about 40 KB
//! left of its 10 MiB budget (`cross/build.sh`). Linux only, as the gateway is.

use std::fmt::Write;

/// The metrics in the Prometheus text format, each with its `# HELP` and `# TYPE`; one that
/// cannot be read is left out.
pub fn render() -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        }
    };
    let stat = Stat::read();
    let stat = stat.as_ref();
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stat.map(|s| s.cpu_ticks / clock_ticks()),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stat.map(|s| s.rss_pages * page_size()),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.map(|s| s.vsize_bytes),
    );
    let start = stat
        .zip(boot_time())
        .map(|(s, boot)| boot + s.start_ticks / clock_ticks());
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        start,
    );
    // The directory's own descriptor is among them while it is read.
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1));
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        open.map(|n| n as f64),
    );
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let max = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some(limit.rlim_cur as f64);
    metric(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max,
    );
    out
}

/// The fields of `/proc/self/stat` used here.
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: f64,
    start_ticks: f64,
    vsize_bytes: f64,
    rss_pages: f64,
}

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        Stat::parse(&text)
    }

    /// Fields after the command name (which may hold spaces and parentheses: it ends at the
    /// last `)`), counted as in proc(5) from 3 (state).
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        Some(Stat {
            cpu_ticks: field(14)? + field(15)?,
            start_ticks: field(22)?,
            vsize_bytes: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    }
}

fn page_size() -> f64 {
    // SAFETY: sysconf only reads a constant.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as f64,
        _ => 4096.0,
    }
}

/// The boot time, seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (kiri (a) b) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 \
                    9 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                    1 0 0 0 0 0";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(stat.cpu_ticks, 300.0);
        assert_eq!(stat.start_ticks, 123456.0);
        assert_eq!(stat.vsize_bytes, 987654321.0);
        assert_eq!(stat.rss_pages, 2048.0);
        let own = Stat::read().expect("/proc/self/stat");
        assert!(own.rss_pages > 0.0 && own.vsize_bytes > 0.0);
        let text = render();
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{text}");
        }
    }
}
