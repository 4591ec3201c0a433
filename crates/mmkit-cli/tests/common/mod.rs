//! Helpers shared by the CLI's end-to-end tests: run the real `mmkit`
//! binary and check the CLI's conventions (one-line errors, exit status).

#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `mmkit` binary built for these tests.
pub fn mmkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmkit"))
}

/// Runs `mmkit ARGS` with `stdin` fed from a thread (so a command that
/// prints while it reads cannot deadlock on full pipes).
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = mmkit()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().unwrap();
    // A command may exit without reading all of its input (an error).
    let _ = writer.join().unwrap();
    out
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(args: &[&str], stdin: &[u8]) -> String {
    let out = run(args, stdin);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr, checked to be one
/// line starting with `mmkit: `.
pub fn fails(args: &[&str]) -> String {
    one_line_error(args, run(args, b""))
}

/// [`fails`] for commands that must also print nothing on stdout.
pub fn fails_quietly(args: &[&str]) -> String {
    let out = run(args, b"");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&out.stdout));
    one_line_error(args, out)
}

/// Checks that `out` is a failure with one line on stderr starting with
/// `mmkit: `, and returns that line.
pub fn one_line_error(args: &[&str], out: Output) -> String {
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("mmkit: "), "{err:?}");
    err
}

/// A path as the `&str` argument the CLI takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `mmkit ARGS` with stdin closed, killing it after `limit`; `None`
/// when it had to be killed (it hung).
pub fn run_limited(args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = mmkit()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}
