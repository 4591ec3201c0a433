//! Process and thread identity that survives pid reuse.
//!
//! A [`ProcessToken`] packs a thread (or process) id with the moment that
//! thread started, in clock ticks since boot, as `/proc/<tid>/stat` field 22
//! reports it in the initial time namespace. A pid that the kernel hands
//! out again belongs to a task with a later start time, so an old token
//! never passes for the new task.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::thread::LocalKey;

use crate::error::{Error, Result};

/// Bits of the token holding the thread id (`PID_MAX_LIMIT` is 2^22).
const TID_BITS: u32 = 22;
const TID_MASK: u64 = (1 << TID_BITS) - 1;
/// Bits left for the start time: 2^42 ticks at 100 Hz is ~1,400 years.
const START_BITS: u32 = 64 - TID_BITS;
const START_MASK: u64 = (1 << START_BITS) - 1;

/// A compact `(tid, start time)` identity that can live in shared memory.
///
/// Layout of the raw `u64`: the thread id in the low 22 bits, the thread's
/// start time (clock ticks since boot, `/proc/<tid>/stat` field 22) in the
/// high 42 bits. The raw value 0 means "nobody". See `docs/sync-format.md`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ProcessToken(u64);

/// Whether the task a [`ProcessToken`] names still runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Liveness {
    /// The task exists, is not a zombie and started when the token says.
    /// Also returned when liveness cannot be determined (for example
    /// `/proc` is unreadable), because declaring a live owner dead would
    /// break mutual exclusion.
    Alive,
    /// The task is gone, is a zombie, or its id now belongs to another task.
    Dead,
}

impl ProcessToken {
    /// The token of the calling thread.
    ///
    /// Cached per thread: after the first call this is a thread-local read
    /// and one relaxed atomic load. The cache is invalidated in the child
    /// of `fork()` (through a `pthread_atfork` handler), so a forked child
    /// gets its own token. Raw `clone`/`vfork` system calls that bypass
    /// libc's fork handlers are not supported.
    ///
    /// If `/proc` cannot be read, the start time is recorded as 0
    /// ("unknown"), and liveness checks then only test that the id exists.
    #[inline]
    pub fn current() -> ProcessToken {
        cached(&THREAD_TOKEN, current_tid, "/proc/thread-self/stat")
    }

    /// The token of the calling process: its pid and the process's start
    /// time. Cached like [`ProcessToken::current`].
    ///
    /// Liveness of a process token is that of the main thread: a process
    /// whose main thread called `pthread_exit` while others run shows as a
    /// zombie leader and counts as dead. Use [`ProcessToken::current`] when
    /// that matters.
    pub fn current_process() -> ProcessToken {
        cached(&PROCESS_TOKEN, current_pid, "/proc/self/stat")
    }

    /// The token of another task, read from `/proc/<pid>/stat`.
    ///
    /// Works for process ids and thread ids alike. Fails if the task does
    /// not exist or its id does not fit in 22 bits.
    pub fn of_pid(pid: u32) -> Result<ProcessToken> {
        if pid == 0 || u64::from(pid) > TID_MASK {
            return Err(Error::Invalid {
                op: "ProcessToken::of_pid",
                reason: format!("pid {pid} is out of range"),
            });
        }
        let path = PathBuf::from(format!("/proc/{pid}/stat"));
        let stat =
            read_stat(&path).map_err(|source| Error::Proc { op: "ProcessToken::of_pid", path, source })?;
        Ok(Self::pack(pid, stat.start_ticks))
    }

    /// Builds a token from its parts; `None` if `tid` is 0 or does not fit
    /// in 22 bits, or `start_ticks` does not fit in 42 bits.
    pub fn from_parts(tid: u32, start_ticks: u64) -> Option<ProcessToken> {
        if tid == 0 || u64::from(tid) > TID_MASK || start_ticks > START_MASK {
            return None;
        }
        Some(Self::pack(tid, start_ticks))
    }

    fn pack(tid: u32, start_ticks: u64) -> ProcessToken {
        ProcessToken((u64::from(tid) & TID_MASK) | ((start_ticks & START_MASK) << TID_BITS))
    }

    /// Reinterprets a raw value, as stored in shared memory.
    #[inline]
    pub const fn from_raw(raw: u64) -> ProcessToken {
        ProcessToken(raw)
    }

    /// The raw value to store in shared memory; 0 only for "nobody".
    #[inline]
    pub const fn to_raw(self) -> u64 {
        self.0
    }

    /// The thread or process id.
    #[inline]
    pub const fn pid(self) -> u32 {
        (self.0 & TID_MASK) as u32
    }

    /// The start time in clock ticks since boot (0 when it was unknown).
    #[inline]
    pub const fn start_ticks(self) -> u64 {
        self.0 >> TID_BITS
    }

    /// Whether the task still runs. Reads `/proc/<tid>/stat`: a missing
    /// entry, a zombie (`Z`) or dead (`X`) state, a different start time
    /// (the id was reused), or a kernel thread (which never maps user
    /// memory, so only a stale or forged token can name one) all mean
    /// [`Liveness::Dead`].
    pub fn liveness(self) -> Liveness {
        let pid = self.pid();
        if pid == 0 {
            return Liveness::Dead;
        }
        match read_stat(Path::new(&format!("/proc/{pid}/stat"))) {
            Ok(stat) => {
                let reused = self.start_ticks() != 0 && stat.start_ticks & START_MASK != self.start_ticks();
                let kernel = stat.flags & PF_KTHREAD != 0;
                if reused || kernel || matches!(stat.state, b'Z' | b'X' | b'x') {
                    Liveness::Dead
                } else {
                    Liveness::Alive
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => exists_by_signal(pid),
            // Unreadable or unparsable: never declare a possibly live owner dead.
            Err(_) => Liveness::Alive,
        }
    }

    /// `liveness() == Liveness::Alive`.
    pub fn is_alive(self) -> bool {
        self.liveness() == Liveness::Alive
    }
}

/// `/proc` may hide other users' tasks (`hidepid`); a signal-0 probe tells
/// a hidden task from a missing one.
fn exists_by_signal(pid: u32) -> Liveness {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return Liveness::Dead;
    };
    match rustix::process::test_kill_process(pid) {
        Err(rustix::io::Errno::SRCH) => Liveness::Dead,
        _ => Liveness::Alive,
    }
}

/// Bumped in the child after every `fork()`, invalidating token caches.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// How many `fork()`s separate this process from the one that first asked
/// for a [`ProcessToken`] (one relaxed load). An object that holds a slot
/// under its process's token records this when it takes the slot, and
/// refuses to act in a forked child, where the number differs: the child
/// would act under its parent's identity. Counted from the first call of
/// [`ProcessToken::current`] or [`ProcessToken::current_process`] in the
/// process, which installs the `pthread_atfork` handler.
#[inline]
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}
static FORK_HANDLER: Once = Once::new();

thread_local! {
    /// (fork generation, raw token) of this thread; raw 0 = not yet known.
    static THREAD_TOKEN: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    static PROCESS_TOKEN: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The token in `slot` if it was computed in this fork generation, else a
/// fresh one from `id()` and the start time in `stat_path`.
#[inline]
fn cached(slot: &'static LocalKey<Cell<(u64, u64)>>, id: fn() -> u32, stat_path: &str) -> ProcessToken {
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    let (cached_gen, raw) = slot.get();
    if cached_gen == generation && raw != 0 {
        return ProcessToken(raw);
    }
    refresh(slot, id, stat_path)
}

#[cold]
fn refresh(slot: &'static LocalKey<Cell<(u64, u64)>>, id: fn() -> u32, stat_path: &str) -> ProcessToken {
    register_fork_handler();
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    let start = read_stat(Path::new(stat_path)).map(|s| s.start_ticks).unwrap_or(0);
    let token = ProcessToken::pack(id(), start);
    slot.set((generation, token.0));
    token
}

fn current_tid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

fn current_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn register_fork_handler() {
    FORK_HANDLER.call_once(|| {
        // SAFETY: registers a handler that only performs one atomic add,
        // which is async-signal-safe and valid in a freshly forked child.
        // rustix has no pthread_atfork, hence libc. A failure (ENOMEM)
        // would only leave stale tokens in forked children; there is
        // nothing better to do than carry on.
        let _ = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// `PF_KTHREAD` in the `flags` field of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The fields of `/proc/<pid>/stat` that liveness needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 3: one of `R S D Z T t X I ...`.
    pub(crate) state: u8,
    /// Field 9: the kernel's `PF_*` flags of the task.
    pub(crate) flags: u64,
    /// Field 22: start time in clock ticks since boot.
    pub(crate) start_ticks: u64,
}

/// Reads a `/proc/<pid>/stat` file, with the start time moved out of the
/// reader's time namespace (see [`root_ticks`]).
fn read_stat(path: &Path) -> io::Result<Stat> {
    let mut stat = read_raw_stat(path)?;
    stat.start_ticks = root_ticks(stat.start_ticks);
    Ok(stat)
}

/// Converts a start time read from `/proc` into the initial time
/// namespace's clock.
///
/// Why: the kernel adds the *reader's* boottime offset to field 22, so a
/// holder in a time namespace (`unshare --time --boottime N`) records a
/// start time that a peer elsewhere reads differently, and the live holder
/// would look like a reused pid. Subtracting the reader's own offset gives
/// every process the same value. Offsets that are not whole clock ticks
/// can still differ by one tick.
fn root_ticks(ticks: u64) -> u64 {
    let offset = boottime_offset_ticks();
    if offset == 0 {
        return ticks;
    }
    let root = i128::from(ticks) - i128::from(offset);
    u64::try_from(root.max(0)).unwrap_or(u64::MAX)
}

/// (fork generation + 1, 0 = not yet read) for which [`BOOTTIME_OFFSET`]
/// holds: a child forked after `unshare(CLONE_NEWTIME)` lives in the new
/// namespace, so the value is read again after every fork.
static BOOTTIME_OFFSET_GEN: AtomicU64 = AtomicU64::new(0);
/// This process's boottime offset, in clock ticks.
static BOOTTIME_OFFSET: AtomicI64 = AtomicI64::new(0);

/// This process's time-namespace boottime offset in clock ticks (0 in the
/// initial namespace, or where the kernel has no time namespaces).
fn boottime_offset_ticks() -> i64 {
    let generation = FORK_GENERATION.load(Ordering::Acquire).wrapping_add(1);
    if BOOTTIME_OFFSET_GEN.load(Ordering::Acquire) == generation {
        return BOOTTIME_OFFSET.load(Ordering::Acquire);
    }
    // Count forks from now on, so a child's stale value is noticed.
    register_fork_handler();
    let offset =
        std::fs::read("/proc/self/timens_offsets").ok().and_then(|t| parse_boottime_offset(&t)).unwrap_or(0);
    BOOTTIME_OFFSET.store(offset, Ordering::Release);
    BOOTTIME_OFFSET_GEN.store(generation, Ordering::Release);
    offset
}

/// The boottime line of `/proc/<pid>/timens_offsets` (`boottime <secs>
/// <nanos>`; `7`, `CLOCK_BOOTTIME`, on some kernels) in clock ticks.
pub(crate) fn parse_boottime_offset(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text.lines().find(|l| matches!(l.split_whitespace().next(), Some("boottime" | "7")))?;
    let mut fields = line.split_whitespace().skip(1);
    // Parsed as i64 (what the kernel writes), then widened: the product
    // below cannot overflow, whatever the file says.
    let secs = i128::from(fields.next()?.parse::<i64>().ok()?);
    let nanos = i128::from(fields.next()?.parse::<i64>().ok()?);
    let hz = i128::from(rustix::param::clock_ticks_per_second());
    i64::try_from(secs * hz + nanos * hz / 1_000_000_000).ok()
}

fn read_raw_stat(path: &Path) -> io::Result<Stat> {
    let mut buf = [0u8; 1024];
    let mut file = File::open(path)?;
    let mut len = 0;
    while len < buf.len() {
        let n = file.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    parse_stat(&buf[..len]).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat line"))
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) sits in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub(crate) fn parse_stat(line: &[u8]) -> Option<Stat> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let mut fields = line[close + 1..].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    // Field 3 is `state`; field 9 is 6 fields further, field 22 another 13.
    let number = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u64>().ok();
    let flags = number(fields.nth(5)?)?;
    let start_ticks = number(fields.nth(12)?)?;
    Some(Stat { state, flags, start_ticks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_odd_command_names() {
        let line = b"123 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20\n";
        assert_eq!(parse_stat(line), Some(Stat { state: b'S', flags: 6, start_ticks: 4242 }));
        assert_eq!(parse_stat(b"123 (x) Z 1 2"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    proptest::proptest! {
        /// Any command name, including spaces and parentheses, parses.
        #[test]
        fn parses_any_command_name(comm in "[ -~]{0,16}", state in "[RSDZTXI]", start in 0u64..(1 << 42)) {
            let line = format!("77 ({comm}) {state} 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 {start} 19 20\n");
            let stat = parse_stat(line.as_bytes());
            proptest::prop_assert_eq!(stat, Some(Stat { state: state.as_bytes()[0], flags: 6, start_ticks: start }));
        }

        /// Garbage never panics.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_stat(&bytes);
        }
    }

    #[test]
    fn parses_boottime_offsets() {
        let hz = rustix::param::clock_ticks_per_second() as i64;
        let text = b"monotonic 5 0\nboottime 100000 0\n";
        assert_eq!(parse_boottime_offset(text), Some(100_000 * hz));
        assert_eq!(parse_boottime_offset(b"7 -3 500000000\n"), Some(-3 * hz + hz / 2));
        assert_eq!(parse_boottime_offset(b"monotonic 0 0\n"), None);
        assert_eq!(parse_boottime_offset(b"boottime x 0\n"), None);
    }

    #[test]
    fn current_thread_is_alive_and_stable() {
        let me = ProcessToken::current();
        assert_eq!(me, ProcessToken::current());
        assert_ne!(me.to_raw(), 0);
        assert!(me.start_ticks() > 0);
        assert_eq!(me.liveness(), Liveness::Alive);
        let other = std::thread::spawn(ProcessToken::current).join().unwrap();
        assert_ne!(other, me);
        let process = ProcessToken::current_process();
        assert_eq!(process.pid(), std::process::id());
        assert!(process.is_alive());
        assert_eq!(ProcessToken::of_pid(std::process::id()).ok(), Some(process));
    }

    /// A token naming a kernel thread is stale or forged: dead, with or
    /// without a start time.
    #[test]
    fn kernel_threads_are_never_holders() {
        let kthreadd = 2;
        // Pid 2 is kthreadd, except inside a pid namespace.
        let Ok(stat) = read_stat(Path::new("/proc/2/stat")) else { return };
        if stat.flags & PF_KTHREAD == 0 {
            return;
        }
        assert_eq!(ProcessToken::pack(kthreadd, 0).liveness(), Liveness::Dead);
        assert_eq!(ProcessToken::pack(kthreadd, stat.start_ticks).liveness(), Liveness::Dead);
        assert_eq!(ProcessToken::pack(1, 0).liveness(), Liveness::Alive, "init is a user task");
    }
}
