//! Multi-process tests: the test binary re-runs itself with
//! `MMKIT_SYNC_CHILD=<role>` to play the other processes, which share a
//! mapped file with the parent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmkit_region::{Access, MapOptions, Mapping, Mode};
use mmkit_sync::{EventCount, Liveness, LockOutcome, ProcessToken, RobustMutex, RobustRwLock, WaitPolicy};

const ROLE_VAR: &str = "MMKIT_SYNC_CHILD";
const FILE_VAR: &str = "MMKIT_SYNC_FILE";
const ARG_VAR: &str = "MMKIT_SYNC_ARG";

// Layout of the shared file used by every test.
const MUTEX: u64 = 0;
const COUNTER: u64 = 64;
const PAIR_A: u64 = 128;
const PAIR_B: u64 = 136;
const STARTED: u64 = 192;
const EVENTS: u64 = 256;
const ACKS: u64 = 320;
const FAILURES: u64 = 384;
const DIED: u64 = 448;
const ACQUIRED: u64 = 456;
const FILE_LEN: u64 = 4096;

const LONG: Option<Duration> = Some(Duration::from_secs(20));

fn shared_file() -> (tempfile::TempDir, PathBuf, Mapping) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync");
    std::fs::File::create(&path).unwrap().set_len(FILE_LEN).unwrap();
    let map = map(&path);
    (dir, path, map)
}

fn map(path: &Path) -> Mapping {
    MapOptions::new().mode(Mode::ReadWrite).map_path(path).unwrap()
}

/// A child process that is killed and reaped if the test fails first.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

fn spawn(role: &str, path: &Path, arg: u64) -> Kid {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(FILE_VAR, path)
        .env(ARG_VAR, arg.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Kid(child)
}

fn wait_success(mut child: Kid) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// Reads or writes a plain (non-atomic) u64 in the mapping; only ever
/// done while holding the mutex, which is what the tests check.
fn cell(map: &Mapping, offset: u64) -> *mut u64 {
    map.checked_ptr("test cell", offset, 8).unwrap().cast()
}

fn read_cell(map: &Mapping, offset: u64) -> u64 {
    // SAFETY: in bounds (checked), 8-aligned offset in a page-aligned map;
    // accessed only under the mutex.
    unsafe { cell(map, offset).read_volatile() }
}

fn write_cell(map: &Mapping, offset: u64, value: u64) {
    // SAFETY: as in `read_cell`.
    unsafe { cell(map, offset).write_volatile(value) }
}

/// A small xorshift generator; tests need variety, not quality.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        Rng(u64::from(nanos) ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A random pause: mostly nothing or a short spin, sometimes a sleep
    /// long enough for the other side to park.
    fn pause(&mut self) {
        match self.below(10) {
            0..=3 => {}
            4..=7 => {
                for _ in 0..self.below(2000) {
                    std::hint::spin_loop();
                }
            }
            _ => std::thread::sleep(Duration::from_micros(self.below(300))),
        }
    }
}

/// Entry point of child processes; does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    // Never outlive a parent whose test failed.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).unwrap();
    let path = PathBuf::from(std::env::var(FILE_VAR).unwrap());
    let arg: u64 = std::env::var(ARG_VAR).unwrap().parse().unwrap();
    let map = map(&path);
    match role.as_str() {
        "hold" => hold(&map),
        "churn" => churn(&map),
        "count" => count(&map, arg),
        "waiter" => waiter(&map, arg),
        "contend" => contend(&map),
        "exit" => {}
        "park_light_without_membarrier" => park_light_without_membarrier(),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Takes the lock, says so, and sleeps until killed.
fn hold(map: &Mapping) {
    let mutex = RobustMutex::at(map, MUTEX).unwrap();
    let _guard = mutex.lock().unwrap().into_guard();
    EventCount::at(map, STARTED).unwrap().advance(1);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Updates the pair (a, b) under the lock forever; a kill between the two
/// writes leaves a != b, which the next holder must repair.
fn churn(map: &Mapping) {
    let mutex = RobustMutex::at(map, MUTEX).unwrap();
    EventCount::at(map, STARTED).unwrap().advance(1);
    loop {
        let outcome = mutex.lock().unwrap();
        if outcome.owner_died() {
            write_cell(map, PAIR_B, read_cell(map, PAIR_A));
        }
        let guard = outcome.into_guard();
        guard.make_consistent();
        write_cell(map, PAIR_A, read_cell(map, PAIR_A) + 1);
        for _ in 0..100 {
            std::hint::spin_loop();
        }
        write_cell(map, PAIR_B, read_cell(map, PAIR_B) + 1);
    }
}

fn count(map: &Mapping, times: u64) {
    let mutex = RobustMutex::at(map, MUTEX).unwrap();
    let started = EventCount::at(map, STARTED).unwrap();
    // Start together so the two really contend.
    started.advance(1);
    started.wait_for(2, &WaitPolicy::BALANCED, LONG).unwrap();
    for i in 0..times {
        let guard = mutex.lock().unwrap().into_guard();
        let value = read_cell(map, COUNTER);
        if i % 512 == 0 {
            // Hold the lock across a reschedule now and then, so the other
            // process really waits, parks and is woken.
            std::thread::yield_now();
        }
        write_cell(map, COUNTER, value + 1);
        drop(guard);
    }
}

/// Waits behind a holder, then records how it got the lock.
fn contend(map: &Mapping) {
    let mutex = RobustMutex::at(map, MUTEX).unwrap();
    EventCount::at(map, ACKS).unwrap().advance(1);
    let outcome = mutex.lock().unwrap();
    let slot = if outcome.owner_died() { DIED } else { ACQUIRED };
    map.atomic_u64(slot).unwrap().fetch_add(1, Ordering::SeqCst);
    outcome.into_guard().make_consistent();
}

/// Waits for each event in turn with varying policies and random pauses,
/// acknowledging each; a timed-out wait is recorded as a failure.
fn waiter(map: &Mapping, rounds: u64) {
    let events = EventCount::at(map, EVENTS).unwrap();
    let acks = EventCount::at(map, ACKS).unwrap();
    let failures = map.atomic_u32(FAILURES).unwrap();
    let policies = [WaitPolicy::PARK, WaitPolicy::BALANCED, WaitPolicy { spins: 20, yields: 1, park: true }];
    let mut rng = Rng::seeded();
    for i in 1..=rounds {
        // `wait_for` re-checks by itself every `MAX_PARK_SLICE`, which
        // would hide a lost wake-up; `park` does not, so there a lost
        // wake-up shows as a wait of about the whole timeout.
        let woken = if i % 4 == 0 {
            let start = Instant::now();
            events.notifier().park(|| events.get() >= i, LONG) && start.elapsed() < Duration::from_secs(10)
        } else {
            events.wait_for(i, &policies[(i % 3) as usize], LONG).is_ok()
        };
        if !woken {
            // Stop at once: the parent's wait for our ack then times out
            // instead of every later round costing a full timeout.
            failures.fetch_add(1, Ordering::SeqCst);
            return;
        }
        rng.pause();
        acks.advance(1);
    }
}

#[test]
fn holder_killed_in_critical_section_gives_owner_died_quickly() {
    let (_dir, path, map) = shared_file();
    let mutex = RobustMutex::at(&map, MUTEX).unwrap();
    let mut child = spawn("hold", &path, 0);
    EventCount::at(&map, STARTED).unwrap().wait_for(1, &WaitPolicy::BALANCED, LONG).unwrap();
    // The owner is the child's test thread, a task of the child process.
    let owner = mutex.owner().unwrap();
    assert!(Path::new(&format!("/proc/{}/task/{}", child.id(), owner.pid())).exists());
    assert!(owner.is_alive());

    // Kill the holder while this thread is already parked in lock().
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let killed_at = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        killed_at
    });
    let outcome = mutex.lock().unwrap();
    let locked_at = Instant::now();
    let killed_at = killer.join().unwrap();
    let delay = locked_at.saturating_duration_since(killed_at);
    println!("OwnerDied {delay:?} after SIGKILL");
    assert!(outcome.owner_died());
    assert!(delay < Duration::from_millis(200), "took {delay:?}");

    // Dropped without repair: the next locker is told again.
    drop(outcome);
    assert!(mutex.is_inconsistent());
    let outcome = mutex.lock().unwrap();
    assert!(outcome.owner_died());
    outcome.into_guard().make_consistent();
    assert!(matches!(mutex.lock().unwrap(), LockOutcome::Acquired(_)));
    assert!(!child.wait().unwrap().success());
}

#[test]
fn dead_holder_found_by_try_lock_and_after_reaping() {
    let (_dir, path, map) = shared_file();
    let mutex = RobustMutex::at(&map, MUTEX).unwrap();
    let mut child = spawn("hold", &path, 0);
    EventCount::at(&map, STARTED).unwrap().wait_for(1, &WaitPolicy::BALANCED, LONG).unwrap();
    assert!(mutex.try_lock().unwrap().is_none(), "live holder must keep the lock");
    assert!(mutex.lock_timeout(Duration::from_millis(30)).unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
    let outcome = mutex.try_lock().unwrap().expect("dead holder's lock is taken over");
    assert!(outcome.owner_died());
}

#[test]
fn exactly_one_of_two_waiters_takes_over_from_a_dead_holder() {
    let (_dir, path, map) = shared_file();
    let mut holder = spawn("hold", &path, 0);
    EventCount::at(&map, STARTED).unwrap().wait_for(1, &WaitPolicy::BALANCED, LONG).unwrap();
    let waiters = [spawn("contend", &path, 0), spawn("contend", &path, 0)];
    EventCount::at(&map, ACKS).unwrap().wait_for(2, &WaitPolicy::BALANCED, LONG).unwrap();
    std::thread::sleep(Duration::from_millis(20)); // let both park
    holder.kill().unwrap();
    waiters.into_iter().for_each(wait_success);
    let died = map.atomic_u64(DIED).unwrap().load(Ordering::SeqCst);
    let acquired = map.atomic_u64(ACQUIRED).unwrap().load(Ordering::SeqCst);
    assert_eq!((died, acquired), (1, 1), "one takes over and repairs, the other then locks normally");
}

#[test]
fn kills_at_random_points_never_break_the_invariant() {
    let (_dir, path, map) = shared_file();
    let mutex = RobustMutex::at(&map, MUTEX).unwrap();
    let started = EventCount::at(&map, STARTED).unwrap();
    let mut rng = Rng::seeded();
    let mut died = 0;
    for round in 1..=6 {
        let mut child = spawn("churn", &path, 0);
        started.wait_for(round, &WaitPolicy::BALANCED, LONG).unwrap();
        std::thread::sleep(Duration::from_millis(1 + rng.below(15)));
        child.kill().unwrap();
        if round % 2 == 0 {
            child.wait().unwrap(); // reaped; odd rounds leave a zombie
        }
        let outcome = mutex.lock().unwrap();
        let (a, b) = (read_cell(&map, PAIR_A), read_cell(&map, PAIR_B));
        if outcome.owner_died() {
            died += 1;
            assert!(a == b || a == b + 1, "a={a} b={b}");
            write_cell(&map, PAIR_B, a);
            outcome.into_guard().make_consistent();
        } else {
            assert_eq!(a, b);
        }
        child.wait().unwrap();
    }
    println!("holder died inside the lock in {died} of 6 rounds");
    // The churning child holds the lock nearly all the time, so a run in
    // which no kill landed inside it did not test takeover at all.
    assert!(died > 0, "no kill landed inside the critical section");
}

#[test]
fn two_processes_count_exactly() {
    const TIMES: u64 = 1_000_000;
    let (_dir, path, map) = shared_file();
    let start = Instant::now();
    let children = [spawn("count", &path, TIMES), spawn("count", &path, TIMES)];
    children.into_iter().for_each(wait_success);
    println!("2 x {TIMES} lock/unlock in {:?}", start.elapsed());
    assert_eq!(read_cell(&map, COUNTER), 2 * TIMES);
    assert!(!RobustMutex::at(&map, MUTEX).unwrap().is_inconsistent());
}

#[test]
fn wait_notify_stress_loses_no_wakeup() {
    const ROUNDS: u64 = 1500;
    let (_dir, path, map) = shared_file();
    let events = EventCount::at(&map, EVENTS).unwrap();
    let acks = EventCount::at(&map, ACKS).unwrap();
    let children = [spawn("waiter", &path, ROUNDS), spawn("waiter", &path, ROUNDS)];
    let mut rng = Rng::seeded();
    let start = Instant::now();
    for i in 1..=ROUNDS {
        rng.pause();
        if i % 2 == 0 {
            events.publish(i)
        } else {
            assert_eq!(events.advance(1), i)
        };
        // Each waiter acknowledges every event; a lost wake-up would time out here.
        acks.wait_for(2 * i, &WaitPolicy::BALANCED, LONG).unwrap();
    }
    children.into_iter().for_each(wait_success);
    println!("{ROUNDS} rounds with 2 waiters in {:?}", start.elapsed());
    assert_eq!(map.atomic_u32(FAILURES).unwrap().load(Ordering::SeqCst), 0);
}

#[test]
fn zombie_and_reaped_processes_are_dead() {
    let (_dir, path, _map) = shared_file();
    let mut child = spawn("exit", &path, 0);
    let token = ProcessToken::of_pid(child.id()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Liveness first: a zombie stays one until reaped, so a token seen
        // dead here must show state Z just after.
        let liveness = token.liveness();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let state = stat.rsplit(')').next().unwrap().trim_start().chars().next().unwrap();
        if state == 'Z' {
            break;
        }
        assert_eq!(liveness, Liveness::Alive);
        assert!(Instant::now() < deadline, "child never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(token.liveness(), Liveness::Dead, "a zombie is dead");
    assert!(child.wait().unwrap().success(), "the exiting child failed");
    assert_eq!(token.liveness(), Liveness::Dead, "a reaped process is dead");
}

#[test]
fn forked_child_gets_its_own_token() {
    let parent = ProcessToken::current();
    let shared = Mapping::anonymous(4096, mmkit_region::Share::Shared).unwrap();
    let slot = shared.atomic_u64(0).unwrap();
    let alive = shared.atomic_u64(8).unwrap();
    // SAFETY: the child only computes a token (reads /proc), stores two
    // atomics and leaves with `_exit`, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let me = ProcessToken::current();
        slot.store(me.to_raw(), Ordering::SeqCst);
        alive.store(u64::from(me.is_alive()), Ordering::SeqCst);
        // SAFETY: ends the forked child without running the parent's atexit state.
        unsafe { libc::_exit(0) };
    }
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let (_, status) =
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()).unwrap().unwrap();
    assert_eq!(status.exit_status(), Some(0), "the forked child failed: {status:?}");
    let child = ProcessToken::from_raw(slot.load(Ordering::SeqCst));
    assert_eq!(child.pid(), pid.as_raw_nonzero().get() as u32);
    assert_ne!(child, parent);
    assert_eq!(alive.load(Ordering::SeqCst), 1, "the child saw itself alive");
    assert_eq!(ProcessToken::current(), parent);
    assert_eq!(child.liveness(), Liveness::Dead);
}

/// Waits for the forked child `pid` and checks that it exited with 0.
fn wait_forked(pid: libc::pid_t) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let (_, status) =
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()).unwrap().unwrap();
    assert_eq!(status.exit_status(), Some(0), "the forked child failed: {status:?}");
}

/// A forked child inherits copies of its parent's guards; dropping them
/// releases nothing, because the lock words hold the parent's token.
#[test]
fn guards_dropped_by_a_forked_child_leave_the_parents_locks_held() {
    let shared = Mapping::anonymous(4096, mmkit_region::Share::Shared).unwrap();
    let me = ProcessToken::current();
    let mutex = RobustMutex::at(&shared, 0).unwrap();
    let guard = mutex.lock().unwrap().into_guard();
    let writer_lock = RobustRwLock::at(&shared, 1024).unwrap();
    let write = writer_lock.write().unwrap().into_guard();
    let reader_lock = RobustRwLock::at(&shared, 2048).unwrap();
    let read = reader_lock.read().unwrap();
    // SAFETY: the child only drops guards (a /proc read and atomics) and
    // leaves with `_exit`, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        drop(guard);
        drop(write);
        drop(read);
        // SAFETY: ends the forked child without running the parent's atexit state.
        unsafe { libc::_exit(0) };
    }
    wait_forked(pid);
    assert_eq!(mutex.owner(), Some(me), "the child's drop released the parent's mutex");
    assert_eq!(writer_lock.writer(), Some(me), "the child's drop released the parent's write lock");
    assert_eq!(reader_lock.reader_count(), 1, "the child's drop released the parent's read slot");
    drop((guard, write, read));
    assert_eq!(mutex.owner(), None);
    assert_eq!(writer_lock.writer(), None);
    assert_eq!(reader_lock.reader_count(), 0);
}

/// Installs a seccomp filter that makes `membarrier` fail with ENOSYS, as
/// on a kernel without it or under a container profile that forbids it.
fn deny_membarrier() {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    let filter = [
        libc::sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: 0 },
        libc::sock_filter { code: BPF_JEQ_K, jt: 0, jf: 1, k: libc::SYS_membarrier as u32 },
        libc::sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32 },
        libc::sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: valid prctl calls with a well-formed filter that outlives them.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const _), 0);
    }
}

/// Child: with membarrier denied, `park_light` still waits for its
/// condition or its whole timeout, not just one fallback slice.
fn park_light_without_membarrier() {
    deny_membarrier();
    assert!(!mmkit_sync::barrier::heavy(), "membarrier still works");
    let notifier = mmkit_sync::Notifier::new();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    assert!(!notifier.park_light(|| false, Some(timeout)));
    assert!(started.elapsed() >= timeout, "gave up after {:?}", started.elapsed());
    // Nobody notifies: the fallback's re-checks alone must see the
    // condition come true.
    let started = Instant::now();
    let later = || started.elapsed() >= Duration::from_millis(50);
    assert!(notifier.park_light(later, Some(Duration::from_secs(60))));
}

/// Where `membarrier` fails, `park_light` re-checks its condition every
/// millisecond until it holds or the caller's timeout elapses, and returns
/// whether it held, as documented.
#[test]
fn park_light_without_membarrier_waits_for_its_condition_or_timeout() {
    let (_dir, path, _map) = shared_file();
    wait_success(spawn("park_light_without_membarrier", &path, 0));
}

/// Environment variable that turns every skip into a failure, for a CI
/// machine that is known to be able to run everything.
const NO_SKIP_VAR: &str = "MMKIT_TEST_NO_SKIP";

/// Records that a test cannot run here: prints why, or fails under
/// [`NO_SKIP_VAR`], so a skip never passes unnoticed where it must run.
fn skip(why: &str) {
    assert!(std::env::var_os(NO_SKIP_VAR).is_none(), "test skipped under {NO_SKIP_VAR}: {why}");
    eprintln!("note: test skipped: {why}");
}

/// The `unshare` arguments that run a command in a new time namespace
/// whose boot clock is far ahead of ours.
const TIME_NAMESPACE: [&str; 3] = ["--time", "--boottime", "100000"];

/// A live holder in another time namespace (whose `/proc` start times are
/// shifted by its boottime offset) is seen alive from the initial
/// namespace, and its lock is not taken over.
#[test]
fn a_holder_in_another_time_namespace_keeps_its_lock() {
    let probe = Command::new("unshare").args(TIME_NAMESPACE).arg("true").stderr(Stdio::null()).status();
    if !probe.is_ok_and(|s| s.success()) {
        return skip("cannot create a time namespace (`unshare --time`)");
    }
    let (_dir, path, map) = shared_file();
    let child = Command::new("unshare")
        .args(TIME_NAMESPACE)
        .arg(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, "hold")
        .env(FILE_VAR, &path)
        .env(ARG_VAR, "0")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut kid = Kid(child);
    EventCount::at(&map, STARTED).unwrap().wait_for(1, &WaitPolicy::BALANCED, LONG).unwrap();
    let mutex = RobustMutex::at(&map, MUTEX).unwrap();
    let owner = mutex.owner().expect("the child holds the lock");
    assert!(kid.try_wait().unwrap().is_none(), "the holder exited");
    assert_eq!(ProcessToken::of_pid(owner.pid()).unwrap(), owner, "start times differ across namespaces");
    assert_eq!(owner.liveness(), Liveness::Alive);
    assert!(mutex.lock_timeout(Duration::from_millis(300)).unwrap().is_none(), "a live holder was robbed");
}
