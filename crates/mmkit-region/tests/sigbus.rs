//! SIGBUS safety with real processes: a truncated file poisons the mapping
//! instead of killing the reader; a SIGBUS elsewhere still kills.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use mmkit_region::{Access, Error, GrowableFile, MapOptions, Mode};

const LEN: usize = 1 << 20;

#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    match role.as_str() {
        "truncate" => child_truncate(),
        "unguarded_read" => child_unguarded_read(),
        "fill_registry" => child_fill_registry(),
        "kill_self" => child_kill_self(),
        "kill_ignored" => child_kill_ignored(),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

fn child_truncate() {
    let path = common::env("TRUNC_PATH");
    // Let the parent get into its read loop first.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(0).unwrap();
}

fn write_file(path: &std::path::Path) {
    std::fs::write(path, vec![0x5Au8; LEN]).unwrap();
}

#[test]
fn a_child_truncating_the_file_poisons_the_parents_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("victim");
    write_file(&path);
    let map = MapOptions::new().mode(Mode::ReadOnly).map_path(&path).unwrap();
    let mut buf = vec![0u8; 4096];
    map.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5A));

    let mut child =
        common::child_command("truncate").env("TRUNC_PATH", &path).stdout(Stdio::null()).spawn().unwrap();
    // Read the whole mapping over and over while the child truncates.
    let mut poisoned = None;
    let mut child_done = false;
    for _round in 0..1_000_000 {
        let mut result = Ok(());
        for page in (0..LEN).step_by(4096) {
            result = map.read_at(page as u64, &mut buf);
            if result.is_err() {
                break;
            }
        }
        if let Err(e) = result {
            poisoned = Some(e);
            break;
        }
        if child_done {
            break;
        }
        child_done = child.try_wait().unwrap().is_some();
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    let err = poisoned.expect("reading after truncation must report poisoning");
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("victim"), "{err}");
    assert!(map.is_poisoned());
    // The process runs on: the poisoned range reads zeros, reports errors,
    assert!(matches!(map.read_at(0, &mut buf), Err(Error::Poisoned { .. })));
    assert!(matches!(map.load_u64(0, std::sync::atomic::Ordering::Relaxed), Err(Error::Poisoned { .. })));
    assert!(matches!(map.flush(), Err(Error::Poisoned { .. })), "nothing can be saved any more");
    // SAFETY: nobody writes this private zero memory now.
    assert!(unsafe { map.as_slice() }.iter().all(|&b| b == 0));
    drop(map);
    // and other work goes on normally.
    let other = dir.path().join("other");
    write_file(&other);
    let fresh = MapOptions::new().map_path(&other).unwrap();
    fresh.read_at(LEN as u64 - 4096, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5A));
    assert!(!fresh.is_poisoned());
}

fn child_unguarded_read() {
    // We are about to die of SIGBUS on purpose: no core dump.
    let no_core = rustix::process::Rlimit {
        current: Some(0),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Core).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Core, no_core).unwrap();
    let path = std::path::PathBuf::from(common::env("TRUNC_PATH"));
    let guarded_path = path.with_extension("guarded");
    write_file(&path);
    write_file(&guarded_path);
    // A guarded mapping installs the handler...
    let guarded = MapOptions::new().map_path(&guarded_path).unwrap();
    assert!(mmkit_region::sigbus::is_installed());
    // ...but this mapping opts out, so a SIGBUS in it must kill us.
    let map = MapOptions::new().sigbus_guard(false).map_path(&path).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    let mut buf = [0u8; 16];
    let _ = map.read_at(8192, &mut buf);
    drop(guarded);
    println!("survived an unguarded SIGBUS");
}

#[test]
fn a_sigbus_outside_registered_mappings_still_kills() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unguarded");
    let out = common::run_child("unguarded_read", &[("TRUNC_PATH", path.display().to_string())]);
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "child should die of SIGBUS: {:?}", out.status);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
}

fn child_kill_self() {
    let no_core = rustix::process::Rlimit {
        current: Some(0),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Core).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Core, no_core).unwrap();
    // Start from the default disposition (std installs a handler of its
    // own, which swallows one non-fault SIGBUS), so the chain's SIG_DFL
    // path is what runs.
    // SAFETY: setting a signal disposition to SIG_DFL before any handler of
    // ours is installed; no other thread is running.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
    let path = std::path::PathBuf::from(common::env("TRUNC_PATH"));
    write_file(&path);
    let _guarded = MapOptions::new().map_path(&path).unwrap();
    assert!(mmkit_region::sigbus::is_installed());
    // A SIGBUS that is not a memory fault must keep its default action.
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::BUS).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    println!("survived kill -BUS");
}

#[test]
fn a_sigbus_sent_with_kill_still_kills() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed");
    let out = common::run_child("kill_self", &[("TRUNC_PATH", path.display().to_string())]);
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "child should die of SIGBUS: {:?}", out.status);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
}

fn child_kill_ignored() {
    // SAFETY: setting a disposition before any handler of ours is
    // installed; no other thread is running.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_IGN) };
    let path = std::path::PathBuf::from(common::env("TRUNC_PATH"));
    write_file(&path);
    let _guarded = MapOptions::new().map_path(&path).unwrap();
    assert!(mmkit_region::sigbus::is_installed());
    // An ignored SIGBUS sent with kill(2) must stay ignored after chaining.
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::BUS).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    println!("survived ignored kill -BUS");
}

#[test]
fn an_ignored_sigbus_sent_with_kill_stays_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ignored");
    let out = common::run_child("kill_ignored", &[("TRUNC_PATH", path.display().to_string())]);
    common::assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived ignored kill -BUS"));
}

#[test]
fn a_growable_file_shrunk_by_another_handle_is_poisoned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grow");
    let mut owner = GrowableFile::create(&path, LEN as u64, 4 * LEN).unwrap();
    owner.fill_at(0, LEN, 1).unwrap();
    let reader = GrowableFile::open(&path, Mode::ReadWrite, 4 * LEN).unwrap();
    owner.shrink_to(0).unwrap();
    let mut buf = [0u8; 8];
    let err = reader.read_at(LEN as u64 / 2, &mut buf).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert_eq!(buf, [0u8; 8]);
    assert!(matches!(reader.grow_to(2 * LEN as u64), Err(Error::Poisoned { .. })));
    assert!(matches!(reader.refresh(), Err(Error::Poisoned { .. })));
    // The owner that shrank is untouched.
    assert!(!owner.is_poisoned());
    owner.grow_to(4096).unwrap();
    owner.write_at(0, b"alive").unwrap();
}

#[test]
fn poisoning_one_mapping_leaves_another_mapping_of_the_same_file_alone_until_touched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two");
    write_file(&path);
    let a = MapOptions::new().map_path(&path).unwrap();
    let b = MapOptions::new().offset(4096).len(4096).map_path(&path).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(LEN as u64 / 2).unwrap();
    let mut buf = [0u8; 4];
    // `b` lies in the part that still exists.
    b.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0x5A; 4]);
    a.read_at(0, &mut buf).unwrap();
    assert!(matches!(a.read_at(LEN as u64 - 4, &mut buf), Err(Error::Poisoned { .. })));
    assert!(!b.is_poisoned());
    b.read_at(0, &mut buf).unwrap();
}

fn child_fill_registry() {
    use mmkit_region::sigbus;
    let path = std::path::PathBuf::from(common::env("TRUNC_PATH"));
    std::fs::write(&path, b"small file").unwrap();
    let before = sigbus::registered();
    let maps: Vec<_> =
        (0..sigbus::CAPACITY - before).map(|_| MapOptions::new().map_path(&path).unwrap()).collect();
    assert_eq!(sigbus::registered(), sigbus::CAPACITY);
    // A full registry does not stop mapping; the new mapping is unguarded.
    let extra = MapOptions::new().map_path(&path).unwrap();
    let mut buf = [0u8; 5];
    extra.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"small");
    drop(maps);
    assert_eq!(sigbus::registered(), before);
    let guarded = MapOptions::new().map_path(&path).unwrap();
    assert_eq!(sigbus::registered(), before + 1);
    drop(guarded);
    println!("registry-ok");
}

#[test]
fn a_full_registry_leaves_new_mappings_unguarded_but_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many");
    let out = common::run_child("fill_registry", &[("TRUNC_PATH", path.display().to_string())]);
    common::assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("registry-ok"));
}
