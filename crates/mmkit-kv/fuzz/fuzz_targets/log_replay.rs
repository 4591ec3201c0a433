//! Fuzzes the redo log's replay after a power loss: a damaged or forged
//! log (checksums resealed when the first byte is odd) over the data file
//! as synced at the chain's base, opened cold, then read, checked and
//! written. Run with `cargo +nightly fuzz run log_replay`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmkit_kv::fuzzing::fuzz_log(data);
});
