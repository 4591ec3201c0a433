//! Fuzzes the `.npy` header parser: any bytes must parse or fail cleanly,
//! and a header that parses must survive re-encoding unchanged.
//!
//! ```text
//! cd crates/mmkit-array/fuzz && cargo +nightly fuzz run npy_header
//! ```
//! The same check runs on every `cargo test` (tests/fuzz_logic.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(mismatch) = mmkit_array::header::check_header_bytes(data) {
        panic!("{mismatch}");
    }
});
