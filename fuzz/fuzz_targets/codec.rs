//! `kiri::fuzzing::codec` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiri::fuzzing::codec(data));
