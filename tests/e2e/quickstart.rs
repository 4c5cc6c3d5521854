//! The getting-started guide (`docs/getting-started.md`) as a reader runs it: every `sh`
//! block, verbatim, in bash, one command at a time (a second apart, as typed), with a
//! Debian user's `PATH` (no `/usr/sbin`), in a scratch folder laid out like the repository:
//! `target/release/kiri` and `kiri-sensor` are the binaries under test, the examples are
//! the built ones, and the guide's fixed ports (1883, 1884, 8080) are used. `make run [CONFIG=
//! FILE]` runs the Makefile's own `run` recipe, read from the Makefile, without its build
//! steps (the binaries are built already). Each block has an expectation here: a new block in
//! the guide fails this test until it gets one.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::sensors::kiri_sensor;
use crate::util::*;

/// A Debian user's `PATH` (`/etc/login.defs` `ENV_PATH`): what the guide's commands see.
const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fenced `sh` blocks of `markdown`, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// A block's commands, each whole: lines joined across `\`, here-documents and `for` loops.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cmd, mut heredoc, mut loops) = (String::new(), None::<String>, 0i32);
    for line in block.lines() {
        cmd.push_str(line);
        cmd.push('\n');
        let t = line.trim();
        if let Some(end) = &heredoc {
            if t == end {
                heredoc = None;
            }
        } else if let Some(at) = t.find("<<") {
            heredoc = Some(
                t[at + 2..]
                    .trim()
                    .trim_matches(['\'', '"', '-'])
                    .to_string(),
            );
        }
        let word = t.split_whitespace().next().unwrap_or("");
        if heredoc.is_none() {
            loops += i32::from(matches!(word, "for" | "while")) - i32::from(word == "done");
        }
        // A comment goes with the command after it.
        let open = t.ends_with('\\') || t.is_empty() || t.starts_with('#');
        if heredoc.is_none() && loops == 0 && !open {
            out.push(std::mem::take(&mut cmd));
        }
    }
    out
}

/// The Makefile's `run` recipe for `config`, without its build steps, as one script.
fn run_recipe(config: &str) -> String {
    let makefile = fs::read_to_string(repo().join("Makefile")).unwrap();
    let recipe: Vec<String> = makefile
        .lines()
        .skip_while(|l| !l.starts_with("run:"))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .filter(|l| !l.contains("$(CARGO) build"))
        .map(|l| {
            l.trim_start_matches('\t')
                .trim_start_matches('@')
                .replace("$(CONFIG)", config)
                .replace("$$", "$")
        })
        .collect();
    assert!(
        recipe.iter().any(|l| l.contains("kiri run --config")),
        "the Makefile's run recipe: {recipe:?}"
    );
    recipe.join("\n")
}

/// Processes started here, each its own process group, killed whole when dropped.
#[derive(Default)]
struct Groups(Vec<Child>);

impl Groups {
    /// Starts `script` in bash in `dir`, output to `log`.
    fn start(&mut self, dir: &Path, script: &str, log: &Path) -> &mut Child {
        let out = fs::File::create(log).unwrap();
        let child = Command::new("bash")
            .args(["-c", script])
            .current_dir(dir)
            .env("PATH", USER_PATH)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("run bash");
        self.0.push(child);
        self.0.last_mut().unwrap()
    }

    fn kill(child: &mut Child) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &format!("-{}", child.id())])
            .status();
        if !poll_until(Duration::from_secs(10), || {
            child.try_wait().ok().flatten().is_some()
        }) {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status();
        }
        let _ = child.wait();
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        for child in &mut self.0 {
            Groups::kill(child);
        }
    }
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn wait_for_text(what: &str, log: &Path, want: &str) {
    let found = poll_until(Duration::from_secs(60), || read(log).contains(want));
    assert!(
        found,
        "{what}: {want:?} never appeared; output:\n{}",
        read(log)
    );
}

#[test]
fn the_getting_started_commands_work_as_written() {
    for port in [1883, 1884, 8080] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken: the guide uses it (stop what listens there)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path();
    fs::create_dir_all(s.join("target/release")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiri"), s.join("target/release/kiri")).unwrap();
    std::os::unix::fs::symlink(kiri_sensor(), s.join("target/release/kiri-sensor")).unwrap();
    let wasm = function_wasm("convert");
    let wasm_target = wasm.parent().unwrap().parent().unwrap();
    std::os::unix::fs::symlink(wasm_target, s.join("target/wasm32-unknown-unknown")).unwrap();
    fs::copy(
        repo().join("kiri.example.toml"),
        s.join("kiri.example.toml"),
    )
    .unwrap();

    let guide = fs::read_to_string(repo().join("docs/getting-started.md")).unwrap();
    let mut groups = Groups::default();
    let mut gateway: Option<usize> = None;
    let mut run_log = PathBuf::new();
    for (i, block) in sh_blocks(&guide).into_iter().enumerate() {
        let log = s.join(format!("block-{i}.log"));
        let cmds = commands(&block);
        let make_run = cmds.iter().position(|c| c.trim().starts_with("make run"));
        // The commands before `make run` (all of them without one), one a second.
        let before = &cmds[..make_run.unwrap_or(cmds.len())];
        if !before.is_empty() {
            let script = format!("set -e\n{}", before.join("sleep 1\n"));
            let child = groups.start(s, &script, &log);
            let done = poll_until(Duration::from_secs(60), || {
                child.try_wait().ok().flatten().is_some()
            });
            let status = child.try_wait().ok().flatten();
            assert!(
                done && status.is_some_and(|st| st.success()),
                "block {i} failed ({status:?}):\n{block}\noutput:\n{}",
                read(&log)
            );
        }
        if let Some(at) = make_run {
            let config = cmds[at]
                .trim()
                .strip_prefix("make run")
                .unwrap()
                .trim()
                .strip_prefix("CONFIG=")
                .unwrap_or("kiri.example.toml")
                .to_string();
            if let Some(g) = gateway.take() {
                Groups::kill(&mut groups.0[g]);
            }
            run_log = s.join(format!("run-{i}.log"));
            groups.start(s, &run_recipe(&config), &run_log);
            gateway = Some(groups.0.len() - 1);
            wait_for_text(
                "make run",
                &run_log,
                "Dashboard: http://127.0.0.1:8080/#token=",
            );
            wait_for_text("make run", &run_log, "kiri running gateway=gw-01");
            // The summary line shows the simulated sensor's readings coming in.
            let arriving = poll_until(Duration::from_secs(30), || {
                read(&run_log)
                    .lines()
                    .any(|l| l.contains("last 5s:") && !l.contains(": 0 events in"))
            });
            assert!(
                arriving,
                "no summary of readings arriving:\n{}",
                read(&run_log)
            );
            continue;
        }
        // What each block must show.
        let want = if block.contains("mosquitto -p 1884") {
            "gateway=gw-01 function="
        } else if block.contains("kiri status") {
            "convert"
        } else if block.contains("anomalies") {
            "function=zscore"
        } else {
            panic!("block {i} of the guide has no expectation in this test:\n{block}")
        };
        wait_for_text(&format!("block {i}"), &log, want);
        if block.contains("kiri status") {
            wait_for_text(&format!("block {i}"), &log, "uplink");
        }
    }
    // With the cloud broker up, results leave: the summary says so.
    let g = gateway.expect("the guide starts a gateway");
    wait_for_text(
        "results forwarded",
        &run_log,
        "uplink connected to mqtt://127.0.0.1:1884",
    );
    Groups::kill(&mut groups.0[g]);
}
