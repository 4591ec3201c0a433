//! `mmkit queue mirror-out` / `mirror-in` end to end: the real binary
//! against a real `nats-server -js` started by the test.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use mmkit_bridge::LocalServer;

mod common;
use common::{mmkit, ok, run, s};

/// Runs a command that must fail with exit status 1; returns its stderr,
/// checked to be one line.
fn fails(args: &[&str]) -> String {
    let out = run(args, b"");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    common::one_line_error(args, out)
}

fn server(dir: &Path, config: &str) -> Option<LocalServer> {
    if mmkit_bridge::nats_server_binary().is_none() && std::env::var_os("MMKIT_TEST_NO_SKIP").is_none() {
        eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
        return None;
    }
    Some(LocalServer::start_with_config(&dir.join("nats"), config).unwrap())
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

#[test]
fn help_has_examples() {
    for cmd in ["mirror-out", "mirror-in"] {
        let help = ok(&["queue", cmd, "--help"], b"");
        assert!(help.contains("Example:") && help.contains(&format!("mmkit queue {cmd} ")), "{help}");
        assert!(help.contains("--json") && help.contains("--once"), "{help}");
    }
}

#[test]
fn mirror_out_and_in_round_trip_with_json_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(srv) = server(tmp.path(), "") else { return };
    let url = srv.url();
    let q = tmp.path().join("q");
    ok(&["queue", "create", s(&q), "--segment-size", "65536"], b"");
    let lines: String = (0..2000).map(|i| format!("message {i}\n")).collect();
    ok(&["queue", "append", s(&q)], lines.as_bytes());

    let common = ["--server", &url, "--stream", "ORDERS", "--once", "--json"];
    let out = ok(&[&["queue", "mirror-out", s(&q), "--create-stream"][..], &common].concat(), b"");
    let events = json_lines(&out);
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"connected"), "{out}");
    assert!(kinds.contains(&"stream_created") && kinds.contains(&"resynced"), "{out}");
    let progress = events.iter().rfind(|e| e["event"] == "progress").expect("a progress line");
    assert_eq!((progress["lag"].as_u64(), progress["messages"].as_u64()), (Some(0), Some(2000)), "{out}");
    let done = events.last().unwrap();
    assert_eq!((done["event"].as_str(), done["messages"].as_u64()), (Some("done"), Some(2000)));

    // `queue stat` shows the mirror's cursor and its lag.
    let stat: serde_json::Value =
        serde_json::from_str(&ok(&["queue", "stat", s(&q), "--json"], b"")).unwrap();
    let cursor = &stat["cursors"][0];
    assert_eq!((cursor["name"].as_str(), cursor["lag"].as_u64()), (Some("nats-ORDERS"), Some(0)));

    // Mirror-in creates the queue and appends the stream, exactly once.
    let copy = tmp.path().join("copy");
    let done = json_lines(&ok(&[&["queue", "mirror-in", s(&copy)][..], &common].concat(), b""));
    assert_eq!(done.last().unwrap()["messages"].as_u64(), Some(2000));
    let again = json_lines(&ok(&[&["queue", "mirror-in", s(&copy)][..], &common].concat(), b""));
    assert_eq!(again.last().unwrap()["messages"].as_u64(), Some(0));
    assert_eq!(ok(&["queue", "tail", s(&copy)], b""), lines);
    let first: serde_json::Value =
        serde_json::from_str(ok(&["queue", "tail", s(&copy), "--json"], b"").lines().next().unwrap())
            .unwrap();
    assert!(first["meta_hex"].as_str().unwrap().starts_with("4d4d4b4201"), "{first}");

    // Without --json: one summary line on stdout.
    ok(&["queue", "append", s(&q)], b"one more\n");
    let text = ok(&["queue", "mirror-out", s(&q), "--server", &url, "--stream", "ORDERS", "--once"], b"");
    assert_eq!(
        text,
        "published 1 messages to stream ORDERS (cursor nats-ORDERS) (0 skipped, stream sequence 2001)\n"
    );
}

#[test]
fn permanent_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "max_payload: 4096\nauthorization {\n  users = [\n    { user: admin, password: pw }\n    { user: ro, password: pw, permissions: { publish: { allow: [\"$JS.API.>\", \"_INBOX.>\"] }, subscribe: { allow: [\"_INBOX.>\"] } } }\n  ]\n}\n";
    let Some(srv) = server(tmp.path(), config) else { return };
    let admin = format!("nats://admin:pw@127.0.0.1:{}", srv.port());
    let q = tmp.path().join("q");
    ok(&["queue", "create", s(&q)], b"");
    ok(&["queue", "append", s(&q)], b"small\n");

    let err = fails(&["queue", "mirror-out", s(&q), "--server", &admin, "--stream", "S", "--once"]);
    assert!(err.contains("stream S not found") && err.contains("--create-stream"), "{err}");
    assert!(!err.contains("pw@"), "the password is not printed: {err}");
    let err = fails(&["queue", "mirror-in", s(&q), "--server", &admin, "--stream", "S", "--once"]);
    assert!(err.contains("stream S not found"), "{err}");
    ok(
        &["queue", "mirror-out", s(&q), "--server", &admin, "--stream", "S", "--once", "--create-stream"],
        b"",
    );

    let ro = format!("nats://ro:pw@127.0.0.1:{}", srv.port());
    ok(&["queue", "append", s(&q)], b"denied\n");
    let err = fails(&["queue", "mirror-out", s(&q), "--server", &ro, "--stream", "S", "--once"]);
    assert!(err.to_lowercase().contains("permissions violation"), "{err}");

    let big = "x".repeat(5000) + "\n";
    ok(&["queue", "append", s(&q)], big.as_bytes());
    let out = run(&["queue", "mirror-out", s(&q), "--server", &admin, "--stream", "S", "--once"], b"");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("more than 4096 (the server's max_payload)"), "{err}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "", "no summary after an error");

    let err = fails(&["queue", "mirror-out", s(&q), "--server", &admin, "--stream", "S", "--replicas", "3"]);
    assert!(err.contains("go with --create-stream"), "{err}");
    let err =
        fails(&["queue", "mirror-out", s(&tmp.path().join("none")), "--server", &admin, "--stream", "S"]);
    assert!(err.contains("no such queue directory"), "{err}");
}

#[test]
fn sigterm_settles_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(srv) = server(tmp.path(), "") else { return };
    let q = tmp.path().join("q");
    ok(&["queue", "create", s(&q)], b"");
    let mut child = mmkit()
        .args(["queue", "mirror-out", s(&q), "--server", &srv.url(), "--stream", "T", "--create-stream"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ok(&["queue", "append", s(&q)], b"a\nb\nc\n");
    // Following: it has published them once the cursor has no lag.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ok(&["queue", "stat", s(&q)], b"").contains("lag 0") {
        assert!(std::time::Instant::now() < deadline, "the mirror did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{status}");
    assert!(out.starts_with("published 3 messages"), "{out}");
}
