//! Helpers shared by the integration tests: running this test binary again
//! as a child process with a role.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

/// Environment variable that selects a child role.
pub const ROLE_VAR: &str = "MMKIT_REGION_TEST_ROLE";

/// The role this process was started with, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// A command that re-runs this test binary, executing only the test named
/// `child_entry` in role `role`.
pub fn child_command(role: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::null());
    cmd
}

/// Runs a child to completion, capturing its output.
pub fn run_child(role: &str, envs: &[(&str, String)]) -> Output {
    let mut cmd = child_command(role);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn child")
}

/// Panics with the child's output unless it exited with status 0.
pub fn assert_child_ok(out: &Output) {
    assert!(
        out.status.success(),
        "child failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of an environment variable the parent passed.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
}

/// A unique name for a shared-memory segment used by one test.
pub fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("mmkit-test-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Environment variable that turns every skip into a failure, for a CI
/// machine that is known to have python3 and root.
pub const NO_SKIP_VAR: &str = "MMKIT_TEST_NO_SKIP";

/// Records that a test cannot run on this machine: prints why on stderr
/// (shown with `--nocapture`), or fails when [`NO_SKIP_VAR`] is set, so a
/// skip never passes unnoticed where the test is expected to run.
pub fn skip(why: &str) {
    assert!(std::env::var_os(NO_SKIP_VAR).is_none(), "test skipped under {NO_SKIP_VAR}: {why}");
    eprintln!("note: test skipped: {why}");
}
