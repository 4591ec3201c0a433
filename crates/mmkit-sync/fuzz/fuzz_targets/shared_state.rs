//! Hostile shared memory and `/proc` lines must never panic the primitives.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmkit_sync::fuzzing::shared_state(data);
});
