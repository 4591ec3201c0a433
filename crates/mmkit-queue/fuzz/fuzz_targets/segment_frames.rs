//! Fuzzes the segment header parser and the frame walker over a whole
//! segment image (frame state words, lengths, padding, index slots).
//! Run with `cargo +nightly fuzz run segment_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmkit_queue::format::fuzz_parse(data);
});
