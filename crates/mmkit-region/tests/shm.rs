//! Named shared memory: lifecycle, Python interop, racing open_or_create.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use mmkit_region::shm::Shm;
use mmkit_region::{Access, Error, Mode};

#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    match role.as_str() {
        "open_or_create" => child_open_or_create(),
        "create_forever" => child_create_forever(),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Removes a segment at the end of a test, even on panic.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Shm::unlink(&self.0);
    }
}

#[test]
fn create_open_list_info_unlink() {
    let name = common::unique_name("life");
    let _cleanup = Cleanup(name.clone());
    let seg = Shm::create(&name, 10_000).unwrap();
    assert_eq!(seg.name(), name);
    assert_eq!(seg.len(), 10_000);
    assert_eq!(seg.path(), std::path::Path::new("/dev/shm").join(&name));
    let map = seg.map(Mode::ReadWrite).unwrap();
    map.write_at(9_990, b"0123456789").unwrap();

    // "/name" and "name" are the same segment.
    let again = Shm::open(&format!("/{name}"), Mode::ReadOnly).unwrap();
    assert_eq!(again.len(), 10_000);
    let mut buf = [0u8; 10];
    again.map(Mode::ReadOnly).unwrap().read_at(9_990, &mut buf).unwrap();
    assert_eq!(&buf, b"0123456789");
    assert!(matches!(again.map(Mode::ReadWrite), Err(Error::ReadOnly { .. })));

    let info = Shm::info(&name).unwrap();
    assert_eq!(info.size, 10_000);
    assert_eq!(info.mode, 0o600);
    assert_eq!(info.uid, rustix::process::geteuid().as_raw());
    assert!(Shm::list().unwrap().iter().any(|i| i.name == name && i.size == 10_000));

    let err = Shm::create(&name, 1).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::AlreadyExists), "{err}");
    Shm::unlink(&name).unwrap();
    assert!(!Shm::list().unwrap().iter().any(|i| i.name == name));
    // The mapping outlives the name.
    map.read_at(9_990, &mut buf).unwrap();
    assert_eq!(&buf, b"0123456789");
    let err = Shm::unlink(&name).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound), "{err}");
}

/// Python refuses `SharedMemory(create=True, size=0)`; an empty segment
/// cannot be mapped, so creating one is a mistake, refused before anything
/// appears in /dev/shm.
#[test]
fn creating_an_empty_segment_is_refused() {
    let name = common::unique_name("zero");
    let _cleanup = Cleanup(name.clone());
    let results = [
        Shm::create(&name, 0).map(|_| ()),
        Shm::create_with_mode(&name, 0, 0o644).map(|_| ()),
        Shm::open_or_create(&name, 0).map(|_| ()),
    ];
    for result in results {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::ZeroLength { op: "create shm", .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&name) && text.contains("create shm") && text.contains("size is zero"),
            "{text}"
        );
    }
    let err = Shm::info(&name).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound), "nothing was created: {err}");
}

/// Another program may still make an empty segment: it opens, and only
/// mapping it is an error.
#[test]
fn an_empty_segment_made_elsewhere_opens_but_does_not_map() {
    let name = common::unique_name("empty");
    let _cleanup = Cleanup(name.clone());
    std::fs::File::create(format!("/dev/shm/{name}")).unwrap();
    let seg = Shm::open(&name, Mode::ReadWrite).unwrap();
    assert!(seg.is_empty());
    assert_eq!(Shm::info(&name).unwrap().size, 0);
    for mode in [Mode::ReadOnly, Mode::ReadWrite, Mode::CopyOnWrite] {
        let err = seg.map(mode).unwrap_err();
        assert!(matches!(err, Error::ZeroLength { .. }), "{err}");
        assert!(err.to_string().contains(&format!("/dev/shm/{name}")), "{err}");
    }
    let (again, created) = Shm::open_or_create(&name, 0).unwrap();
    assert!(!created && again.is_empty());
    let (again, created) = Shm::open_or_create(&name, 4096).unwrap();
    assert!(!created && again.is_empty(), "an existing segment keeps its size");
}

#[test]
fn create_with_mode_applies_the_mode_exactly() {
    let name = common::unique_name("mode");
    let _cleanup = Cleanup(name.clone());
    Shm::create_with_mode(&name, 4096, 0o644).unwrap();
    assert_eq!(Shm::info(&name).unwrap().mode, 0o644);
}

#[test]
fn symlinks_are_never_followed() {
    let name = common::unique_name("link");
    let _cleanup = Cleanup(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"do not touch").unwrap();
    std::os::unix::fs::symlink(&target, format!("/dev/shm/{name}")).unwrap();
    let err = Shm::open(&name, Mode::ReadWrite).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::InvalidInput), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    let err = Shm::create(&name, 4096).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::AlreadyExists), "{err}");
    let err = Shm::info(&name).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "a symlink is not a segment: {err}");
    assert!(!Shm::list().unwrap().iter().any(|i| i.name == name));
    assert_eq!(std::fs::read(&target).unwrap(), b"do not touch");
}

/// A FIFO planted under a segment's name (anyone may write /dev/shm) must
/// give an error at once, not block the opener until a writer shows up.
#[test]
fn a_fifo_under_the_name_is_refused_without_blocking() {
    let name = common::unique_name("fifo");
    let _cleanup = Cleanup(name.clone());
    rustix::fs::mknodat(
        rustix::fs::CWD,
        format!("/dev/shm/{name}"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let opener = name.clone();
    std::thread::spawn(move || {
        let results =
            [Mode::ReadOnly, Mode::CopyOnWrite, Mode::ReadWrite].map(|m| Shm::open(&opener, m).is_err());
        let _ = tx.send(results);
    });
    let results = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("Shm::open blocked on a FIFO");
    assert_eq!(results, [true; 3]);
}

fn python3() -> Option<Command> {
    let probe = Command::new("python3").arg("-c").arg("from multiprocessing import shared_memory").output();
    match probe {
        Ok(out) if out.status.success() => Some(Command::new("python3")),
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr);
            common::skip(&format!("python3 lacks multiprocessing.shared_memory: {why}"));
            None
        }
        Err(e) => {
            common::skip(&format!("cannot run python3 ({e}); the Python interop test needs it"));
            None
        }
    }
}

#[test]
fn rust_creates_python_reads_and_writes_back() {
    let Some(mut py) = python3() else { return };
    let name = common::unique_name("py1");
    let _cleanup = Cleanup(name.clone());
    let seg = Shm::create(&name, 4096).unwrap();
    let map = seg.map(Mode::ReadWrite).unwrap();
    map.write_at(0, b"from rust").unwrap();
    // Attaching registers the segment with Python's resource tracker, which
    // would unlink it at exit (cpython #82300); unregister it.
    let script = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
shm = shared_memory.SharedMemory(name=sys.argv[1])
resource_tracker.unregister(shm._name, "shared_memory")
assert shm.size >= 4096, shm.size
assert bytes(shm.buf[:9]) == b"from rust", bytes(shm.buf[:9])
shm.buf[100:111] = b"from python"
shm.close()
print("ok")
"#;
    let out = py.arg("-c").arg(script).arg(&name).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut buf = [0u8; 11];
    map.read_at(100, &mut buf).unwrap();
    assert_eq!(&buf, b"from python");
    assert!(Shm::info(&name).is_ok(), "python must not have unlinked it");
}

#[test]
fn python_creates_rust_reads_and_writes_back() {
    let Some(mut py) = python3() else { return };
    let name = common::unique_name("py2");
    let _cleanup = Cleanup(name.clone());
    let script = r#"
import sys
from multiprocessing import shared_memory
shm = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=8192)
shm.buf[:11] = b"from python"
print("ready", flush=True)
sys.stdin.readline()
got = bytes(shm.buf[4000:4009])
shm.close()
shm.unlink()
print("got", got.decode(), flush=True)
"#;
    let mut child =
        py.arg("-c").arg(script).arg(&name).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let seg = Shm::open(&name, Mode::ReadWrite).unwrap();
    assert_eq!(seg.len(), 8192);
    let map = seg.map(Mode::ReadWrite).unwrap();
    let mut buf = [0u8; 11];
    map.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from python");
    map.write_at(4000, b"from rust").unwrap();

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "got from rust");
    assert!(child.wait().unwrap().success());
    // Python unlinked it.
    assert_eq!(Shm::open(&name, Mode::ReadOnly).unwrap_err().io_kind(), Some(std::io::ErrorKind::NotFound));
}

const RACE_LEN: u64 = 3 << 20;

fn child_open_or_create() {
    let name = common::env("SHM_NAME");
    let go = common::env("GO_FILE");
    while !std::path::Path::new(&go).exists() {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let (seg, created) = Shm::open_or_create(&name, RACE_LEN).unwrap();
    let map = seg.map(Mode::ReadWrite).unwrap();
    let count = map.atomic_u64(0).unwrap().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    println!("created={created} len={} count={count}", seg.len());
}

#[test]
fn racing_open_or_create_creates_once_and_never_exposes_a_short_segment() {
    let name = common::unique_name("race");
    let _cleanup = Cleanup(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let children: Vec<_> = (0..6)
        .map(|_| {
            common::child_command("open_or_create")
                .env("SHM_NAME", &name)
                .env("GO_FILE", &go)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(&go, b"").unwrap();
    let mut created = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        common::assert_child_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("created=")).unwrap();
        assert!(line.contains(&format!("len={RACE_LEN}")), "{line}");
        if line.starts_with("created=true") {
            created += 1;
        }
    }
    assert_eq!(created, 1, "exactly one process creates");
    let seg = Shm::open(&name, Mode::ReadOnly).unwrap();
    let map = seg.map(Mode::ReadOnly).unwrap();
    assert_eq!(map.load_u64(0, std::sync::atomic::Ordering::SeqCst).unwrap(), 6, "all six share one segment");
    assert!(!Shm::list().unwrap().iter().any(|i| i.name.starts_with(".mmkit-tmp-")));
}

const KILL_LEN: u64 = 1 << 20;

fn child_create_forever() {
    let base = common::env("SHM_NAME");
    for i in 0u64.. {
        let name = format!("{base}-{}", i % 3);
        match Shm::create(&name, KILL_LEN) {
            Ok(_) => Shm::unlink(&name).unwrap(),
            Err(e) => assert_eq!(e.io_kind(), Some(std::io::ErrorKind::AlreadyExists), "{e}"),
        }
        if i == 50 {
            println!("creating-started");
        }
    }
}

#[test]
fn sigkill_during_creation_never_leaves_a_short_segment() {
    let base = common::unique_name("kill");
    for round in 0..3u64 {
        let mut child = common::child_command("create_forever")
            .env("SHM_NAME", &base)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child is creating (libtest prints lines of its own).
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while line.trim() != "creating-started" {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "child ended early");
        }
        std::thread::sleep(std::time::Duration::from_millis(3 + 7 * round));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        drop(stdout);
        for k in 0..3 {
            let name = format!("{base}-{k}");
            if let Ok(info) = Shm::info(&name) {
                assert_eq!(info.size, KILL_LEN, "a visible segment always has its full size");
                Shm::unlink(&name).unwrap();
            }
        }
        // A kill between create and rename leaves a hidden temporary file
        // named after the child's pid; clean those up.
        let prefix = format!(".mmkit-tmp-{}-", child.id());
        for entry in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
