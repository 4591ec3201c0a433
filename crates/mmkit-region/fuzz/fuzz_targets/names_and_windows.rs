//! Fuzzes the two places where mmkit-region parses outside input: shared-
//! memory names, and (offset, length) windows of a file with reads inside
//! them. Run with `cargo fuzz run names_and_windows` from this directory.
//! The same properties run as normal tests in `tests/errors.rs`
//! (`names_normalize_to_one_component`) and `tests/mapping.rs`
//! (`windows_match_std_reads`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmkit_region::{Access, Error, MapOptions, shm};

fn check_name(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else { return };
    match shm::normalize_name("fuzz", name) {
        Ok(bare) => {
            assert!(!bare.is_empty() && bare.len() <= shm::NAME_MAX);
            assert!(!bare.contains('/') && !bare.contains('\0'));
            assert!(bare != "." && bare != "..");
            assert!(name == bare || name.strip_prefix('/') == Some(bare));
        }
        Err(e) => assert!(matches!(e, Error::InvalidName { .. })),
    }
}

fn word(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(buf)
}

fn check_window(data: &[u8]) {
    if data.len() < 32 {
        return;
    }
    let (head, body) = data.split_at(32);
    let size = body.len() as u64;
    let offset = word(&head[0..]) % (size + 2);
    let len = (word(&head[8..]) % (size + 2)) as usize;
    let inner = word(&head[16..]) % (size + 2);
    let inner_len = (word(&head[24..]) % 64) as usize;
    let path = std::env::temp_dir().join(format!("mmkit-fuzz-{}", std::process::id()));
    std::fs::write(&path, body).unwrap();
    match MapOptions::new().offset(offset).len(len).map_path(&path) {
        Ok(map) => {
            assert!(len > 0 && offset + len as u64 <= size);
            let mut buf = vec![0u8; inner_len];
            match map.read_at(inner, &mut buf) {
                Ok(()) => {
                    let start = (offset + inner) as usize;
                    assert_eq!(&buf[..], &body[start..start + inner_len]);
                }
                Err(e) => assert!(matches!(e, Error::OutOfBounds { .. })),
            }
        }
        Err(e) => assert!(matches!(e, Error::ZeroLength { .. } | Error::OutOfBounds { .. })),
    }
}

fuzz_target!(|data: &[u8]| {
    check_name(data);
    check_window(data);
});
