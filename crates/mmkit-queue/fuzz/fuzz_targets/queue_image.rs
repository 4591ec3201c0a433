//! Overwrites bytes of a built queue (meta file, sealed and active
//! segments) and reads it all without blocking, checks, repairs and
//! appends: only errors are allowed, never a panic, a hang or an
//! out-of-bounds access. Run with `cargo +nightly fuzz run queue_image`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmkit_queue::fuzzing::queue_image(data);
});
