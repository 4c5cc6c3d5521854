//! `kiri::fuzzing::topic` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiri::fuzzing::topic(data));
