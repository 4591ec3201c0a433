//! Helpers shared by the multi-process tests: self-checking payloads, child
//! processes (the test binary re-run with `MMKQ_ROLE` set, entering through
//! its `child_entry` test) that are killed when dropped, and a cheap PRNG.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Deterministic payload for message `i` of producer `p`: a self-checking
/// header plus filler derived from both.
pub fn payload(p: u32, i: u32) -> Vec<u8> {
    let len = 8 + ((p.wrapping_mul(31) ^ i.wrapping_mul(2654435761)) % 200) as usize;
    sized_payload(p, i, len)
}

/// Like [`payload`], `len` bytes long (at least 8).
pub fn sized_payload(p: u32, i: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&p.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.extend((8..len).map(|k| (k as u32 ^ p ^ i) as u8));
    v
}

/// Checks a payload is exactly what [`sized_payload`] made; returns (p, i).
pub fn verify(v: &[u8]) -> (u32, u32) {
    assert!(v.len() >= 8, "torn record: {} bytes", v.len());
    let p = u32::from_le_bytes(v[..4].try_into().unwrap());
    let i = u32::from_le_bytes(v[4..8].try_into().unwrap());
    assert_eq!(
        v,
        sized_payload(p, i, v.len()).as_slice(),
        "torn or corrupt record for producer {p} message {i}"
    );
    (p, i)
}

/// A child process killed when dropped, so a failing test leaves none behind.
pub struct Kid(pub Child);

impl Drop for Kid {
    fn drop(&mut self) {
        kill(self);
    }
}

impl std::ops::Deref for Kid {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kid {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Runs this test binary again as a child in `role`, with `args` in its
/// environment and its stdout piped.
pub fn child(role: &str, args: &[(&str, String)]) -> Kid {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1"]).env("MMKQ_ROLE", role);
    for (k, v) in args {
        cmd.env(k, v);
    }
    Kid(cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap())
}

/// An environment variable of the child's (empty if unset).
pub fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

/// The first line the child prints that starts with `prefix` (the test
/// harness prints its own lines first).
pub fn line_from(c: &mut Kid, prefix: &str) -> u64 {
    let mut r = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "child ended before printing {prefix}");
        // The harness may print "test child_entry ... " on the same line.
        if let Some(v) = line.trim().split(prefix).nth(1) {
            return v.parse().unwrap();
        }
    }
}

/// SIGKILLs the child and reaps it (a child that already exited is just reaped).
pub fn kill(c: &mut Kid) {
    let _ = c.0.kill();
    let _ = c.0.wait();
}

/// Lines of three space-separated numbers a child appended to `path`.
pub fn parse_acks(path: &Path) -> Vec<(u32, u32, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Cheap deterministic PRNG (xorshift) for kill schedules.
pub fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Copies the queue's files. A producer's background thread may still be
/// building the next segment under a hidden temporary name (renamed away at
/// any moment), so hidden files are skipped and a file that vanishes
/// between listing and copying is not an error.
pub fn copy_queue(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match std::fs::copy(e.path(), to.join(e.file_name())) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("copy {}: {err}", e.path().display()),
        }
    }
}
