//! `kiri::fuzzing::deploy` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiri::fuzzing::deploy(data));
