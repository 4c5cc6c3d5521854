//! The fuzz targets of `kiri::fuzzing` on stable, briefly (`make test`; `make fuzz` runs them
//! under libFuzzer for longer): every committed seed (`fuzz/seeds/<target>/`) and every
//! regression (`fuzz/regressions/<target>/`, inputs that once failed), then seeded random
//! mutations of them, `TEST_FUZZ_CASES` per target (default 5,000). Each run prints its seed;
//! `TEST_FUZZ_SEED` replays one. A failing input is written to
//! `<target dir>/fuzz-failures/` to be moved into `fuzz/regressions/<target>/` with the fix.

mod mutate;
mod seeds;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use kiri::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The files in `fuzz/<kind>/<target>/`, by name (dot files, such as `.gitkeep`, skipped).
fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Runs `entry` on `input`; a panic becomes a failure that names `what`. A generated input is
/// kept (`keep`: a file name) for the regressions.
fn run(target: &str, what: &str, keep: Option<&str>, input: &[u8], entry: &mut dyn FnMut(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| entry(input))).is_ok() {
        return;
    }
    let Some(name) = keep else {
        panic!("fuzz target {target} failed on {what}");
    };
    let dir = target_dir().join("fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{target}-{name}"));
    std::fs::write(&path, input).unwrap();
    panic!(
        "fuzz target {target} failed on {what}; the input is in {} (move it to \
         fuzz/regressions/{target}/ with the fix)",
        path.display()
    );
}

/// Seeds and regressions, then the random mutations.
fn fuzz(target: &str, entry: &mut dyn FnMut(&[u8])) {
    let seeds = files("seeds", target);
    assert!(
        !seeds.is_empty(),
        "no seeds in fuzz/seeds/{target}: `cargo test -p kiri --test fuzz -- --ignored write_seeds`"
    );
    let regressions = files("regressions", target);
    for (path, bytes) in seeds.iter().chain(&regressions) {
        run(target, &path.display().to_string(), None, bytes, entry);
    }
    let cases = env_number("TEST_FUZZ_CASES").unwrap_or(5000);
    let seed = env_number("TEST_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    println!(
        "fuzz {target}: {} seeds, {} regressions, {cases} mutations with seed {seed} \
         (TEST_FUZZ_SEED={seed} replays them)",
        seeds.len(),
        regressions.len()
    );
    let corpus: Vec<Vec<u8>> = seeds
        .into_iter()
        .chain(regressions)
        .map(|(_, b)| b)
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    for case in 0..cases {
        let base = &corpus[rng.usize(0..corpus.len())];
        let input = mutate::mutate(&mut rng, base, &corpus);
        let what = format!("seed {seed} case {case}");
        run(
            target,
            &what,
            Some(&format!("{seed}-{case}")),
            &input,
            entry,
        );
    }
}

#[test]
fn codec() {
    fuzz("codec", &mut fuzzing::codec);
}

#[test]
fn deploy() {
    fuzz("deploy", &mut fuzzing::deploy);
}

#[test]
fn config() {
    fuzz("config", &mut fuzzing::config);
}

#[test]
fn topic() {
    fuzz("topic", &mut fuzzing::topic);
}

#[test]
fn outbox_record() {
    fuzz("outbox_record", &mut fuzzing::outbox_record);
}

#[test]
fn host_abi() {
    let path = target_dir().join("wasm32-unknown-unknown/release/kiri_fuzz_guest.wasm");
    let guest = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build it first (`make functions`, or `make test`)",
            path.display()
        )
    });
    let mut host = fuzzing::HostAbi::new(&guest);
    fuzz("host_abi", &mut |data| host.run(data));
}

#[test]
fn every_target_is_tested_here_and_has_a_libfuzzer_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let here = include_str!("main.rs");
    for t in fuzzing::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{t}\"")),
            "fuzz/Cargo.toml lacks {t}"
        );
        assert!(here.contains(&format!("fuzz(\"{t}\"")), "no test runs {t}");
        assert!(fuzzing::stateless(t).is_some() || t == "host_abi");
    }
}

/// Rewrites `fuzz/seeds/` from `seeds.rs` (run by hand when a format changes).
#[test]
#[ignore]
fn write_seeds() {
    for t in fuzzing::TARGETS {
        let dir = fuzz_dir().join("seeds").join(t);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds::of(t) {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
