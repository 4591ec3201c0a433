//! Overwrites bytes of a freshly built heap (header, allocator, registry,
//! vector and map metadata) and uses every API on it: only errors are
//! allowed, never a panic or an out-of-bounds access.
//! Run with `cargo +nightly fuzz run heap_image`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmkit_heap::fuzzing::heap_image(data);
});
