//! SIGBUS safety with real processes: a truncated file poisons the mapping
//! instead of killing the reader; a SIGBUS elsewhere still kills.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

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
        "kill_then_fault" => child_kill_then_fault(),
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

fn write_file(path: &Path) {
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

/// We are about to die of SIGBUS on purpose: no core dump.
fn no_core_dump() {
    let no_core = rustix::process::Rlimit {
        current: Some(0),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Core).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Core, no_core).unwrap();
}

/// The file the parent named in `TRUNC_PATH`, written full of 0x5A.
fn child_file() -> PathBuf {
    let path = PathBuf::from(common::env("TRUNC_PATH"));
    write_file(&path);
    path
}

/// Runs `role` in a child, with `TRUNC_PATH` naming a file `name` in a
/// fresh temporary directory.
fn run_child_with_file(role: &str, name: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    common::run_child(role, &[("TRUNC_PATH", path.display().to_string())])
}

/// The child died of SIGBUS before it could report surviving.
fn assert_killed_by_sigbus(out: &Output) {
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "child should die of SIGBUS: {:?}", out.status);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
}

fn child_unguarded_read() {
    no_core_dump();
    let path = child_file();
    let guarded_path = path.with_extension("guarded");
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
    let out = run_child_with_file("unguarded_read", "unguarded");
    assert_killed_by_sigbus(&out);
}

/// With a guarded mapping alive (so the handler is installed), sends this
/// process SIGBUS with kill(2): not a memory fault, so the handler must
/// chain to the disposition in force before it.
fn kill_self_with_sigbus_while_guarded() {
    let path = child_file();
    let _guarded = MapOptions::new().map_path(&path).unwrap();
    assert!(mmkit_region::sigbus::is_installed());
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::BUS).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
}

fn child_kill_self() {
    no_core_dump();
    // Start from the default disposition (std installs a handler of its
    // own, which swallows one non-fault SIGBUS), so the chain's SIG_DFL
    // path is what runs.
    // SAFETY: `signal` only sets this process's SIGBUS disposition; no
    // SIGBUS is being handled now, and ours is not installed yet, so the
    // handler installed next records SIG_DFL as the one to chain to.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
    // A SIGBUS that is not a memory fault must keep its default action.
    kill_self_with_sigbus_while_guarded();
    println!("survived kill -BUS");
}

#[test]
fn a_sigbus_sent_with_kill_still_kills() {
    let out = run_child_with_file("kill_self", "killed");
    assert_killed_by_sigbus(&out);
}

fn child_kill_ignored() {
    // SAFETY: as in `child_kill_self`, with SIG_IGN as the disposition to
    // chain to.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_IGN) };
    // An ignored SIGBUS sent with kill(2) must stay ignored after chaining.
    kill_self_with_sigbus_while_guarded();
    println!("survived ignored kill -BUS");
}

#[test]
fn an_ignored_sigbus_sent_with_kill_stays_ignored() {
    let out = run_child_with_file("kill_ignored", "ignored");
    common::assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived ignored kill -BUS"));
}

fn child_kill_then_fault() {
    no_core_dump();
    // Rust's runtime handler stays the one chained to: it swallows a
    // SIGBUS sent with kill(2) by resetting SIGBUS to the default.
    let path = child_file();
    let map = MapOptions::new().map_path(&path).unwrap();
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::BUS).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Our handler must still be there for a real fault.
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    let mut buf = [0u8; 16];
    let read = map.read_at(8192, &mut buf);
    assert!(map.is_poisoned(), "{read:?}");
    println!("survived a fault after kill -BUS");
}

#[test]
fn a_sigbus_sent_with_kill_leaves_the_guard_working() {
    let out = run_child_with_file("kill_then_fault", "kill_then_fault");
    common::assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived a fault after kill -BUS"));
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
    let path = PathBuf::from(common::env("TRUNC_PATH"));
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
    let out = run_child_with_file("fill_registry", "many");
    common::assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("registry-ok"));
}

/// Sends this thread a SIGBUS that looks exactly like the kernel's report
/// of a fault at `addr` (`si_code = BUS_ADRERR`): what a second thread that
/// faulted in the same range at the same time receives, only later.
/// (`rt_tgsigqueueinfo` allows `si_code > 0` when a thread signals itself.)
fn send_late_fault_report(addr: usize) {
    // SAFETY: a zeroed `siginfo_t` is valid plain data; we fill in what
    // the kernel fills in for a fault (signo, code, and the address, which
    // sits at offset 16 on 64-bit Linux, as the assert below confirms).
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        info.si_signo = libc::SIGBUS;
        info.si_code = libc::BUS_ADRERR;
        (&mut info as *mut libc::siginfo_t).cast::<u8>().add(16).cast::<usize>().write(addr);
        assert_eq!(info.si_addr() as usize, addr);
        let rc = libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::gettid(),
            libc::SIGBUS,
            &info as *const libc::siginfo_t,
        );
        assert_eq!(rc, 0, "rt_tgsigqueueinfo: {}", std::io::Error::last_os_error());
    }
}

/// A fault reported for a range that is already poisoned leaves the
/// replacement memory alone: what the process wrote there since (a lock's
/// owner word, say) survives.
#[test]
fn a_late_fault_report_keeps_what_was_written_after_poisoning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, vec![1u8; 8192]).unwrap();
    let map = MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap();
    let word = map.atomic_u64(0).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(map.read_at(0, &mut buf), Err(Error::Poisoned { .. })));
    word.store(0xfeed, std::sync::atomic::Ordering::SeqCst);
    send_late_fault_report(map.as_ptr() as usize + 4096);
    assert_eq!(word.load(std::sync::atomic::Ordering::SeqCst), 0xfeed);
    assert!(map.is_poisoned());
}

/// Two threads faulting in the same cut mapping at once: the slower
/// thread's handler must not replace the range a second time and wipe what
/// the faster thread wrote after its retried access.
#[test]
fn two_threads_faulting_together_keep_each_others_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};
    let dir = tempfile::tempdir().unwrap();
    let mut wiped = 0;
    for round in 0..3000 {
        let path = dir.path().join(format!("f{round}"));
        std::fs::write(&path, vec![1u8; 16384]).unwrap();
        let map = Arc::new(MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap());
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let go = Arc::new(AtomicBool::new(false));
        let other = {
            let (map, barrier, go) = (map.clone(), barrier.clone(), go.clone());
            std::thread::spawn(move || {
                barrier.wait();
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let _ = map.load_u32(8192, Ordering::Relaxed);
            })
        };
        let word = map.atomic_u32(0).unwrap();
        barrier.wait();
        go.store(true, Ordering::Release);
        let _ = map.load_u32(4096, Ordering::Relaxed);
        word.store(7, Ordering::SeqCst);
        other.join().unwrap();
        if word.load(Ordering::SeqCst) != 7 {
            wiped += 1;
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert_eq!(wiped, 0, "rounds in which a concurrent fault's handler wiped a later write");
}
