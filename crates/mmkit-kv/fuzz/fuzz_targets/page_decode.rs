//! Fuzzes tree-page decoding and editing: any bytes give values or
//! errors, never a panic or an out-of-bounds access.
//! Run with `cargo +nightly fuzz run page_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmkit_kv::fuzzing::fuzz_page(data);
});
