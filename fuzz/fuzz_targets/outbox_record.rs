//! `kiri::fuzzing::outbox_record` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiri::fuzzing::outbox_record(data));
