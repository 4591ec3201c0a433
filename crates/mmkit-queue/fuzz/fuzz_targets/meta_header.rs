//! Fuzzes the meta-file header parser: any bytes give Ok or Err, never a
//! panic. Run with `cargo +nightly fuzz run meta_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = mmkit_queue::format::MetaHeader::parse(data, Path::new("fuzz")) {
        // Whatever parses must re-encode to the same header.
        let again = mmkit_queue::format::MetaHeader::parse(&h.encode(), Path::new("fuzz")).ok();
        assert_eq!(again, Some(h));
    }
});
