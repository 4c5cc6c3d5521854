//! `kiri::fuzzing::HostAbi` under libFuzzer. The guest is `KIRI_FUZZ_GUEST` (set by
//! `scripts/fuzz.sh`), else where `make functions` builds it in the default target folder.
#![no_main]

use std::path::PathBuf;
use std::sync::Mutex;

use kiri::fuzzing::HostAbi;

fn guest() -> Vec<u8> {
    let path = std::env::var_os("KIRI_FUZZ_GUEST").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-unknown-unknown/release/kiri_fuzz_guest.wasm")
        },
        PathBuf::from,
    );
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build the guest with `make functions`)",
            path.display()
        )
    })
}

static HOST: Mutex<Option<HostAbi>> = Mutex::new(None);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    host.get_or_insert_with(|| HostAbi::new(&guest())).run(data);
});
