//! `mmkit kv ...` end to end, running the real binary.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{fails_quietly as fails, mmkit, ok, run, s};

#[test]
fn put_get_del_scan_with_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.kv");
    let db = s(&db);
    assert!(ok(&["kv", "create", db], b"").contains("created"));
    assert!(fails(&["kv", "create", db]).contains("already exists"));
    ok(&["kv", "put", db, "user:2", "grace"], b"");
    ok(&["kv", "put", db, "user:1", "ada"], b"");
    ok(&["kv", "put", db, "zeta", "last"], b"");
    ok(&["kv", "put", db, "--table", "cfg", "color", "blue"], b"");
    assert_eq!(ok(&["kv", "get", db, "user:1"], b""), "ada\n");
    assert_eq!(ok(&["kv", "get", db, "color", "--table", "cfg"], b""), "blue\n");
    assert!(fails(&["kv", "get", db, "nope"]).contains("no key"));
    assert!(fails(&["kv", "get", db, "color", "--table", "missing"]).contains("no such table"));
    assert_eq!(ok(&["kv", "scan", db, "--prefix", "user:"], b""), "user:1\tada\nuser:2\tgrace\n");
    assert_eq!(ok(&["kv", "scan", db, "--reverse", "--limit", "2"], b""), "zeta\tlast\nuser:2\tgrace\n");
    assert_eq!(ok(&["kv", "scan", db, "--from", "user:2", "--to", "zeta"], b""), "user:2\tgrace\n");
    let json = ok(&["kv", "scan", db, "--prefix", "user:", "--reverse", "--json"], b"");
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        rows,
        [
            serde_json::json!({"key": "user:2", "value": "grace"}),
            serde_json::json!({"key": "user:1", "value": "ada"})
        ]
    );
    ok(&["kv", "del", db, "user:1"], b"");
    assert!(fails(&["kv", "del", db, "user:1"]).contains("no key"));
    assert!(fails(&["kv", "get", db, "user:1"]).contains("no key"));
}

#[test]
fn stat_and_check_report_json() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.kv");
    let db = s(&db);
    ok(&["kv", "create", db], b"");
    ok(&["kv", "put", db, "a", "1"], b"");
    ok(&["kv", "put", db, "--table", "t2", "b", "2"], b"");
    let stat: serde_json::Value = serde_json::from_str(&ok(&["kv", "stat", db, "--json"], b"")).unwrap();
    assert_eq!(stat["entries"], 2);
    assert_eq!(stat["tables"].as_array().unwrap().len(), 2);
    assert!(stat["file_size"].as_u64().unwrap() > 0);
    assert!(stat["oldest_snapshot"].is_null());
    assert!(ok(&["kv", "stat", db], b"").contains("table \"t2\": 1 entries"));
    let check: serde_json::Value = serde_json::from_str(&ok(&["kv", "check", db, "--json"], b"")).unwrap();
    assert_eq!(check["ok"], true);
    assert_eq!(check["leaked_pages"], 0);
}

#[test]
fn check_fails_on_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("app.kv");
    let lines: String = (0..2000).map(|i| format!("key{i:05}\tvalue {i}\n")).collect();
    ok(&["kv", "load", s(&path)], lines.as_bytes());
    let mut bytes = std::fs::read(&path).unwrap();
    let page = mmkit_kv::PAGE;
    for p in 4..bytes.len() / page {
        bytes[p * page + page - 10] ^= 0xff;
    }
    std::fs::write(&path, bytes).unwrap();
    let err = fails(&["kv", "check", s(&path)]);
    assert!(err.contains("corrupt page"), "{err}");
}

#[test]
fn dump_load_round_trip_with_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.kv");
    let b = tmp.path().join("b.kv");
    let input = b"plain\tvalue\ntab\\there\tnew\\nline\nbin\\xff\\x00\t\\\\back\n";
    let acks = ok(&["kv", "load", s(&a), "--batch", "2"], input);
    assert_eq!(acks, "2\n3\n", "one acknowledgement per commit");
    assert_eq!(ok(&["kv", "get", s(&a), "tab\there"], b""), "new\nline\n");
    let dump = ok(&["kv", "dump", s(&a)], b"");
    assert_eq!(dump.lines().count(), 3);
    ok(&["kv", "load", s(&b), "--durability", "eventual"], dump.as_bytes());
    assert_eq!(ok(&["kv", "dump", s(&b)], b""), dump);
    let out = run(&["kv", "load", s(&b), "--batch", "1"], b"good\t1\nno tab here\n");
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n", "the good line was committed first");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: no tab"));
}

#[test]
fn compact_writes_a_smaller_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.kv");
    let dst = tmp.path().join("dst.kv");
    let lines: String =
        (0..20_000).map(|i| format!("k{:08}\t{}\n", (i * 7919) % 20_000, "v".repeat(100))).collect();
    ok(&["kv", "load", s(&src), "--durability", "eventual"], lines.as_bytes());
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["kv", "compact", s(&src), s(&dst), "--json"], b"")).unwrap();
    assert!(json["bytes_after"].as_u64().unwrap() <= json["bytes_before"].as_u64().unwrap());
    assert_eq!(ok(&["kv", "dump", s(&dst)], b""), ok(&["kv", "dump", s(&src)], b""));
    assert!(fails(&["kv", "compact", s(&src), s(&dst)]).contains("already exists"));
}

#[test]
fn watch_prints_committed_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("w.kv");
    let db = s(&db);
    ok(&["kv", "create", db], b"");
    let mut child = mmkit()
        .args(["kv", "watch", db, "--prefix", "user:", "--count", "2", "--json", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is watching.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("watching"), "{line}");
    ok(&["kv", "put", db, "other", "x"], b"");
    ok(&["kv", "put", db, "user:1", "ada"], b"");
    std::thread::sleep(Duration::from_millis(50));
    ok(&["kv", "del", db, "user:1"], b"");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0]["key"].as_str(), rows[0]["value"].as_str()), (Some("user:1"), Some("ada")));
    assert_eq!((rows[1]["key"].as_str(), rows[1]["value"].is_null()), (Some("user:1"), true));
}

#[test]
fn bad_input_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text");
    std::fs::write(&text, vec![b'x'; 100_000]).unwrap();
    assert!(fails(&["kv", "get", s(&text), "k"]).contains("not an mmkit-kv database"));
    assert!(fails(&["kv", "get", s(tmp.path()), "k"]).contains("is a directory"));
    assert!(fails(&["kv", "stat", s(&tmp.path().join("missing"))]).contains("no such database"));
    let db = tmp.path().join("db");
    ok(&["kv", "create", s(&db)], b"");
    let long = "k".repeat(5000);
    assert!(fails(&["kv", "put", s(&db), &long, "v"]).contains("too long"));
    assert!(fails(&["kv", "load", s(&db), "--batch", "0"]).contains("--batch"));
    assert!(fails(&["kv", "watch", s(&db), "--timeout", "nan"]).contains("timeout"));
    for cmd in ["create", "put", "get", "del", "scan", "stat", "check", "compact", "watch", "load", "dump"] {
        let help = ok(&["kv", cmd, "--help"], b"");
        assert!(help.contains("Example:"), "{cmd} --help has no example");
    }
}
