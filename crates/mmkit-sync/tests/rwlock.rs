//! The robust reader-writer lock, within one process (threads) and across
//! processes (the test binary re-runs itself as the holder).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmkit_region::{Access, MapOptions, Mapping, Mode, Share};
use mmkit_sync::{Error, EventCount, READER_SLOTS, RobustRwLock, WaitPolicy};

const ROLE_VAR: &str = "MMKIT_SYNC_RW_CHILD";
const FILE_VAR: &str = "MMKIT_SYNC_RW_FILE";
const LOCK: u64 = 0;
const STARTED: u64 = 1024;
const LONG: Option<Duration> = Some(Duration::from_secs(20));

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(role: &str, path: &Path) -> Kid {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(FILE_VAR, path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Kid(child)
}

fn shared_file() -> (tempfile::TempDir, PathBuf, Mapping) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw");
    std::fs::File::create(&path).unwrap().set_len(4096).unwrap();
    let map = MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap();
    (dir, path, map)
}

/// Entry point of child processes; does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).unwrap();
    let path = PathBuf::from(std::env::var(FILE_VAR).unwrap());
    let map = MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap();
    let lock = RobustRwLock::at(&map, LOCK).unwrap();
    let started = EventCount::at(&map, STARTED).unwrap();
    match role.as_str() {
        "reader" => std::mem::forget(lock.read().unwrap()),
        "writer" => std::mem::forget(lock.write().unwrap()),
        other => panic!("unknown role {other}"),
    }
    started.advance(1);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn killed_reader_does_not_block_writers_and_killed_writer_is_reported() {
    let (_dir, path, map) = shared_file();
    let lock = RobustRwLock::at(&map, LOCK).unwrap();
    let started = EventCount::at(&map, STARTED).unwrap();

    let mut reader = spawn("reader", &path);
    started.wait_for(1, &WaitPolicy::BALANCED, LONG).unwrap();
    assert_eq!(lock.reader_count(), 1);
    assert!(lock.try_write().unwrap().is_none(), "a live reader keeps writers out");
    assert!(lock.try_read().unwrap().is_some(), "readers share");
    reader.0.kill().unwrap();
    let killed = Instant::now();
    let outcome = lock.write().unwrap();
    println!("writer in {:?} after the reader's SIGKILL", killed.elapsed());
    assert!(!outcome.owner_died(), "a dead reader changed nothing");
    drop(outcome);

    let mut writer = spawn("writer", &path);
    started.wait_for(2, &WaitPolicy::BALANCED, LONG).unwrap();
    assert!(lock.try_read().unwrap().is_none(), "a live writer keeps readers out");
    writer.0.kill().unwrap();
    let err = lock.read().unwrap_err();
    assert!(matches!(err, Error::Inconsistent { .. }), "{err}");
    let outcome = lock.write().unwrap();
    assert!(outcome.owner_died());
    outcome.into_guard().make_consistent();
    assert!(lock.read().is_ok());
}

#[test]
fn readers_share_and_writers_exclude() {
    let lock = RobustRwLock::new();
    let events = EventCount::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _read = lock.read().unwrap();
            events.advance(1);
            events.wait_for(2, &WaitPolicy::PARK, LONG).unwrap();
        });
        events.wait_for(1, &WaitPolicy::PARK, LONG).unwrap();
        let second = lock.read().unwrap();
        assert_eq!(lock.reader_count(), 2);
        // Writers run on a thread of their own: this one holds a read lock.
        s.spawn(|| {
            assert!(lock.try_write().unwrap().is_none());
            let start = Instant::now();
            assert!(lock.write_timeout(Duration::from_millis(30)).unwrap().is_none());
            assert!(start.elapsed() >= Duration::from_millis(30));
        })
        .join()
        .unwrap();
        assert_eq!(lock.writer(), None, "a timed-out writer leaves no claim behind");
        drop(second);
        events.advance(1);
    });
    let write = lock.write().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(lock.try_read().unwrap().is_none());
            assert!(lock.read_timeout(Duration::from_millis(20)).unwrap().is_none());
        });
    });
    drop(write);
    assert_eq!(lock.reader_count(), 0);
}

#[test]
fn mixing_modes_on_one_thread_is_an_error() {
    let lock = RobustRwLock::new();
    let read = lock.read().unwrap();
    assert!(matches!(lock.write(), Err(Error::WouldDeadlock { .. })));
    assert_eq!(lock.writer(), None);
    drop(read);
    let write = lock.write().unwrap();
    assert!(matches!(lock.read(), Err(Error::WouldDeadlock { .. })));
    assert!(matches!(lock.write(), Err(Error::WouldDeadlock { .. })));
    drop(write);
}

#[test]
fn threads_that_exit_holding_locks_are_dead() {
    let lock = RobustRwLock::new();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.read().unwrap()));
    });
    assert!(!lock.write().unwrap().owner_died(), "the dead reader's slot is reclaimed");
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.write().unwrap()));
    });
    let outcome = lock.write().unwrap();
    assert!(outcome.owner_died());
    outcome.into_guard().make_consistent();
    assert!(!lock.is_inconsistent());
}

#[test]
fn more_readers_than_slots_wait_for_a_slot() {
    let lock = RobustRwLock::new();
    let guards: Vec<_> = (0..READER_SLOTS).map(|_| lock.read().unwrap()).collect();
    assert_eq!(lock.reader_count(), READER_SLOTS);
    assert!(lock.try_read().unwrap().is_none());
    drop(guards);
    assert!(lock.try_read().unwrap().is_some());
}

#[test]
fn pairs_stay_consistent_under_readers_and_writers() {
    let map = Mapping::anonymous(4096, Share::Shared).unwrap();
    let lock = RobustRwLock::at(&map, 0).unwrap();
    let a = map.checked_ptr("a", 1024, 8).unwrap() as usize;
    let b = map.checked_ptr("b", 1032, 8).unwrap() as usize;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..3000 {
                    let _w = lock.write().unwrap();
                    // SAFETY: in bounds and aligned; written only under the write lock.
                    unsafe {
                        let (a, b) = (a as *mut u64, b as *mut u64);
                        a.write_volatile(a.read_volatile() + 1);
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                        b.write_volatile(b.read_volatile() + 1);
                    }
                }
            });
        }
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..3000 {
                    let _r = lock.read().unwrap();
                    // SAFETY: as above; read under a read lock.
                    let (x, y) =
                        unsafe { ((a as *const u64).read_volatile(), (b as *const u64).read_volatile()) };
                    assert_eq!(x, y, "a reader saw a half-done write");
                }
            });
        }
    });
    // SAFETY: as above; all threads are done.
    assert_eq!(unsafe { (a as *const u64).read_volatile() }, 6000);
}

#[test]
fn placement_is_checked() {
    let map = Mapping::anonymous(4096, Share::Shared).unwrap();
    assert!(matches!(RobustRwLock::at(&map, 4), Err(Error::Misaligned { .. })));
    assert!(matches!(RobustRwLock::at(&map, 4096 - 504), Err(Error::Region(_))));
    assert!(RobustRwLock::at(&map, 4096 - 512).is_ok());
}
