//! Fuzzes opening, reading and checking a whole database file (meta
//! pages, trees, overflow runs, free tree) built from the input bytes.
//! Run with `cargo +nightly fuzz run open_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmkit_kv::fuzzing::fuzz_file(data);
});
