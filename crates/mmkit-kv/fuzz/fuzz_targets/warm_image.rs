//! Fuzzes a database whose tree, overflow and free-tree pages a hostile or
//! buggy peer overwrote after they were checksummed: the open is warm
//! (set up in this boot), so nothing verifies them, and every read and
//! write path meets the garbage. Run with `cargo +nightly fuzz run warm_image`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmkit_kv::fuzzing::fuzz_warm(data);
});
