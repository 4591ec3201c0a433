//! The `sync` suite: lock costs, contended throughput, wake latency and
//! dead-holder recovery, mmkit against std, process-shared robust pthread
//! objects and raw_sync, all in one run.
//!
//! Cross-process measurements `fork()` the (single-threaded) bench process
//! and share an anonymous `MAP_SHARED` mapping, which is where the pthread
//! objects live too (`PTHREAD_PROCESS_SHARED`).

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmkit_region::{Access, Mapping, Share};
use mmkit_sync::{EventCount, RobustMutex, RobustRwLock, WaitPolicy};
use raw_sync::Timeout;
use raw_sync::events::{Event, EventInit, EventState};
use raw_sync::locks::{LockImpl, LockInit, Mutex as RawMutex};

type BoxError = Box<dyn std::error::Error>;
type BenchResult<T> = Result<T, BoxError>;

/// Options of the `sync` suite.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repetitions of each measurement; the table shows medians.
    #[arg(long, default_value_t = 9)]
    reps: usize,
    /// Lock+unlock pairs per uncontended repetition.
    #[arg(long, default_value_t = 2_000_000)]
    iters: u64,
    /// Length of each contended run, in milliseconds.
    #[arg(long, default_value_t = 300)]
    window_ms: u64,
    /// Wake-latency samples per peer.
    #[arg(long, default_value_t = 2000)]
    wakes: usize,
    /// Holder kills per peer in the dead-holder measurement.
    #[arg(long, default_value_t = 10)]
    kills: usize,
}

/// Runs the suite and prints its table.
pub fn run(args: Args) -> BenchResult<()> {
    crate::machine::print_header(false);
    let reps = args.reps.max(1);
    println!("sync suite: medians of {reps} repetitions; ratios are against the first row of each group");
    println!();
    println!("| measurement | implementation | result | ratio |");
    println!("|---|---|---|---|");
    uncontended(&args, reps)?;
    uncontended_rw(&args, reps)?;
    contended(&args, reps)?;
    wake_latency(&args)?;
    dead_holder(&args)?;
    Ok(())
}

// ---------------------------------------------------------------- shared

/// Layout of the shared mapping used by every cross-process measurement.
const MMKIT_MUTEX: u64 = 0;
const READY: u64 = 64;
const GO: u64 = 128;
const DONE: u64 = 192;
const EVENTS: u64 = 256;
const STAMP: u64 = 320;
const COUNTER: u64 = 384;
const PTHREAD_MUTEX: u64 = 512;
const PTHREAD_COND: u64 = 640;
const RAW_SYNC: u64 = 1024;
const RAW_EVENT: u64 = 2048;
const PTHREAD_RWLOCK: u64 = 3072;
const RWLOCK: u64 = 3584;
const SAMPLES: u64 = 4096;
const MAP_LEN: usize = 1 << 20;

fn shared_map() -> BenchResult<Mapping> {
    Ok(Mapping::anonymous(MAP_LEN, Share::Shared)?)
}

fn events(map: &Mapping, offset: u64) -> BenchResult<&EventCount> {
    Ok(EventCount::at(map, offset)?)
}

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The plain counter that the locks protect.
fn bump(counter: *mut u64) {
    // SAFETY: `counter` points into the live shared mapping, 8-aligned,
    // and is only touched while the lock under test is held.
    unsafe { counter.write_volatile(counter.read_volatile() + 1) };
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn row(measurement: &str, name: &str, value: f64, unit: &str, baseline: f64) {
    let ratio = if baseline > 0.0 { format!("{:.2}x", value / baseline) } else { "-".into() };
    println!("| {measurement} | {name} | {value:.1} {unit} | {ratio} |");
}

/// Forks; the child runs `f` and exits without returning.
fn fork_child(f: impl FnOnce() -> BenchResult<()>) -> BenchResult<rustix::process::Pid> {
    // SAFETY: the bench process is single-threaded when it forks (helper
    // threads are joined first), so the child may run arbitrary code; it
    // leaves through `_exit`, never returning into the parent's stack.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sync bench child: {e}");
                1
            }
        };
        // SAFETY: ends the child immediately, skipping the parent's atexit state.
        unsafe { libc::_exit(code) };
    }
    rustix::process::Pid::from_raw(pid).ok_or_else(|| "fork returned pid 0".into())
}

/// Waits for `event` to reach `target`, which `child` will advance; fails
/// instead of hanging if the child exits first.
fn wait_on_child(event: &EventCount, target: u64, child: rustix::process::Pid) -> BenchResult<()> {
    loop {
        if event.wait_for(target, &WaitPolicy::BALANCED, Some(Duration::from_millis(100))).is_ok() {
            return Ok(());
        }
        if let Some((_, status)) =
            rustix::process::waitpid(Some(child), rustix::process::WaitOptions::NOHANG)?
        {
            return Err(format!("bench child exited early: {status:?}").into());
        }
    }
}

fn reap(pid: rustix::process::Pid) -> BenchResult<()> {
    let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())?;
    match status {
        Some((_, s)) if s.exit_status() == Some(0) || s.terminating_signal().is_some() => Ok(()),
        other => Err(format!("bench child failed: {other:?}").into()),
    }
}

/// The libc calls that set up one kind of process-shared pthread object
/// `T` through its attribute object `A`.
struct PthreadKind<T, A> {
    what: &'static str,
    attr_init: unsafe extern "C" fn(*mut A) -> libc::c_int,
    attr_setpshared: unsafe extern "C" fn(*mut A, libc::c_int) -> libc::c_int,
    /// One more attribute setting and its value (robustness, for mutexes).
    attr_extra: Option<(unsafe extern "C" fn(*mut A, libc::c_int) -> libc::c_int, libc::c_int)>,
    init: unsafe extern "C" fn(*mut T, *const A) -> libc::c_int,
    attr_destroy: unsafe extern "C" fn(*mut A) -> libc::c_int,
}

/// Places a process-shared pthread object of `kind` at `offset` of the
/// mapping and initialises it.
fn place_pthread<T, A>(map: &Mapping, offset: u64, kind: PthreadKind<T, A>) -> BenchResult<*mut T> {
    map.checked_ptr(kind.what, offset, size_of::<T>())?;
    let ptr = map.aligned_ptr(kind.what, offset, 16)?.cast::<T>();
    let mut attr = MaybeUninit::<A>::uninit();
    let a = attr.as_mut_ptr();
    // SAFETY: `ptr` has room for a `T` inside the live mapping (checked
    // above; the layout constants leave it to this object alone), is
    // 16-aligned and nobody uses it yet; `a` is room for the attribute
    // object, initialised by `attr_init` before any other call uses it and
    // destroyed last. The function pointers are the matching libc calls.
    let rc = unsafe {
        let mut rc = (kind.attr_init)(a);
        rc |= (kind.attr_setpshared)(a, libc::PTHREAD_PROCESS_SHARED);
        if let Some((set, value)) = kind.attr_extra {
            rc |= set(a, value);
        }
        rc |= (kind.init)(ptr, a);
        (kind.attr_destroy)(a);
        rc
    };
    if rc != 0 {
        return Err(format!("{} init failed", kind.what).into());
    }
    Ok(ptr)
}

/// A process-shared, robust pthread mutex placed in the mapping.
fn pthread_mutex(map: &Mapping) -> BenchResult<*mut libc::pthread_mutex_t> {
    let kind = PthreadKind {
        what: "pthread robust mutex",
        attr_init: libc::pthread_mutexattr_init,
        attr_setpshared: libc::pthread_mutexattr_setpshared,
        attr_extra: Some((libc::pthread_mutexattr_setrobust, libc::PTHREAD_MUTEX_ROBUST)),
        init: libc::pthread_mutex_init,
        attr_destroy: libc::pthread_mutexattr_destroy,
    };
    place_pthread(map, PTHREAD_MUTEX, kind)
}

/// Locks a robust pthread mutex; returns whether the owner had died.
fn pthread_lock(m: *mut libc::pthread_mutex_t) -> BenchResult<bool> {
    // SAFETY: `m` was initialised by `pthread_mutex` and stays mapped.
    match unsafe { libc::pthread_mutex_lock(m) } {
        0 => Ok(false),
        libc::EOWNERDEAD => {
            // SAFETY: we hold the mutex after EOWNERDEAD, as required.
            unsafe { libc::pthread_mutex_consistent(m) };
            Ok(true)
        }
        rc => Err(format!("pthread_mutex_lock: {rc}").into()),
    }
}

fn pthread_unlock(m: *mut libc::pthread_mutex_t) {
    // SAFETY: the caller holds `m`.
    unsafe { libc::pthread_mutex_unlock(m) };
}

fn raw_sync_mutex(map: &Mapping) -> BenchResult<Box<dyn LockImpl>> {
    let mem = map.checked_ptr("raw_sync mutex", RAW_SYNC, 512)?;
    // SAFETY: 512 bytes of otherwise unused shared memory; raw_sync
    // initialises a pshared pthread mutex there.
    let (lock, _) = unsafe { RawMutex::new(mem, std::ptr::null_mut()) }.map_err(|e| e.to_string())?;
    Ok(lock)
}

// ---------------------------------------------------------------- uncontended

fn time_per_op(iters: u64, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn uncontended(args: &Args, reps: usize) -> BenchResult<()> {
    let map = shared_map()?;
    let counter = map.checked_ptr("counter", COUNTER, 8)?.cast::<u64>();
    let mutex = RobustMutex::at(&map, MMKIT_MUTEX)?;
    let std_mutex = std::sync::Mutex::new(0u64);
    let pthread = pthread_mutex(&map)?;
    let raw = raw_sync_mutex(&map)?;
    let n = args.iters;
    let mut results: [Vec<f64>; 4] = Default::default();
    for _ in 0..reps {
        results[0].push(time_per_op(n, || {
            if let Ok(mut g) = std_mutex.lock() {
                *g = black_box(*g + 1);
            }
        }));
        results[1].push(time_per_op(n, || {
            if let Ok(g) = mutex.lock() {
                bump(counter);
                drop(black_box(g));
            }
        }));
        results[2].push(time_per_op(n, || {
            if pthread_lock(pthread).is_ok() {
                bump(counter);
                pthread_unlock(pthread);
            }
        }));
        results[3].push(time_per_op(n, || {
            if let Ok(g) = raw.lock() {
                bump(counter);
                drop(black_box(g));
            }
        }));
    }
    let names = [
        "std::sync::Mutex (in-process)",
        "mmkit RobustMutex",
        "pthread robust pshared mutex",
        "raw_sync Mutex",
    ];
    let medians: Vec<f64> = results.into_iter().map(median).collect();
    for (name, value) in names.iter().zip(&medians) {
        row("uncontended lock+unlock", name, *value, "ns", medians[0]);
    }
    Ok(())
}

/// A process-shared pthread rwlock placed in the mapping.
fn pthread_rwlock(map: &Mapping) -> BenchResult<*mut libc::pthread_rwlock_t> {
    let kind = PthreadKind {
        what: "pthread pshared rwlock",
        attr_init: libc::pthread_rwlockattr_init,
        attr_setpshared: libc::pthread_rwlockattr_setpshared,
        attr_extra: None,
        init: libc::pthread_rwlock_init,
        attr_destroy: libc::pthread_rwlockattr_destroy,
    };
    place_pthread(map, PTHREAD_RWLOCK, kind)
}

fn uncontended_rw(args: &Args, reps: usize) -> BenchResult<()> {
    let map = shared_map()?;
    let counter = map.checked_ptr("counter", COUNTER, 8)?.cast::<u64>();
    let rw = RobustRwLock::at(&map, RWLOCK)?;
    let std_rw = std::sync::RwLock::new(0u64);
    let pthread = pthread_rwlock(&map)?;
    let n = args.iters;
    let mut results: [Vec<f64>; 5] = Default::default();
    for _ in 0..reps {
        results[0].push(time_per_op(n, || {
            if let Ok(g) = std_rw.read() {
                black_box(*g);
            }
        }));
        results[1].push(time_per_op(n, || {
            if let Ok(g) = rw.read() {
                // SAFETY: in the mapping; only written under the write lock.
                black_box(unsafe { counter.read_volatile() });
                drop(g);
            }
        }));
        results[2].push(time_per_op(n, || {
            // SAFETY: `pthread` is an initialised pshared rwlock in the mapping.
            if unsafe { libc::pthread_rwlock_rdlock(pthread) } == 0 {
                // SAFETY: as above; we hold a read lock.
                black_box(unsafe { counter.read_volatile() });
                // SAFETY: we hold a read lock.
                unsafe { libc::pthread_rwlock_unlock(pthread) };
            }
        }));
        results[3].push(time_per_op(n, || {
            if let Ok(mut g) = std_rw.write() {
                *g = black_box(*g + 1);
            }
        }));
        results[4].push(time_per_op(n, || {
            if let Ok(g) = rw.write() {
                bump(counter);
                drop(g);
            }
        }));
    }
    let medians: Vec<f64> = results.into_iter().map(median).collect();
    row("uncontended read lock+unlock", "std::sync::RwLock (in-process)", medians[0], "ns", medians[0]);
    row("uncontended read lock+unlock", "mmkit RobustRwLock", medians[1], "ns", medians[0]);
    row("uncontended read lock+unlock", "pthread rwlock pshared (not robust)", medians[2], "ns", medians[0]);
    row("uncontended write lock+unlock", "std::sync::RwLock (in-process)", medians[3], "ns", medians[3]);
    row("uncontended write lock+unlock", "mmkit RobustRwLock", medians[4], "ns", medians[3]);
    Ok(())
}

// ---------------------------------------------------------------- contended

/// Locks in a loop until `stop` is set; returns the operations done.
type WorkFn<'a> = &'a dyn Fn(&AtomicU64) -> BenchResult<u64>;

/// Runs `work` in a forked child and in this process at once for `window`,
/// after a start barrier; returns total operations per second.
fn two_processes(map: &Mapping, window: Duration, work: WorkFn<'_>) -> BenchResult<f64> {
    let (ready, go, done) = (events(map, READY)?, events(map, GO)?, events(map, DONE)?);
    let stop = map.atomic_u64(STAMP)?;
    let child_ops = map.atomic_u64(STAMP + 8)?;
    stop.store(0, Ordering::SeqCst);
    let round = go.get() + 1;
    let child = fork_child(|| {
        ready.advance(1);
        go.wait_for(round, &WaitPolicy::BALANCED, None)?;
        child_ops.store(work(stop)?, Ordering::SeqCst);
        done.advance(1);
        Ok(())
    })?;
    wait_on_child(ready, round, child)?;
    let start = Instant::now();
    go.advance(1);
    let timer = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(window);
            stop.store(1, Ordering::SeqCst);
        });
        work(stop)
    });
    let mine = timer?;
    wait_on_child(done, round, child)?;
    let secs = start.elapsed().as_secs_f64();
    reap(child)?;
    Ok((mine + child_ops.load(Ordering::SeqCst)) as f64 / secs)
}

/// Repeats `op` until `stop` is set, checking it every 64 operations.
fn until_stopped(stop: &AtomicU64, mut op: impl FnMut() -> BenchResult<()>) -> BenchResult<u64> {
    let mut done = 0;
    while stop.load(Ordering::Relaxed) == 0 {
        for _ in 0..64 {
            op()?;
        }
        done += 64;
    }
    Ok(done)
}

fn contended(args: &Args, reps: usize) -> BenchResult<()> {
    let map = shared_map()?;
    let counter = map.checked_ptr("counter", COUNTER, 8)?.cast::<u64>();
    let mutex = RobustMutex::at(&map, MMKIT_MUTEX)?;
    let pthread = pthread_mutex(&map)?;
    let raw = raw_sync_mutex(&map)?;
    let window = Duration::from_millis(args.window_ms);
    let reps = reps.min(3);
    let mut results: [Vec<f64>; 4] = Default::default();
    for _ in 0..reps {
        results[0].push(std_two_threads(window));
        results[1].push(two_processes(&map, window, &|stop| {
            until_stopped(stop, || {
                let g = mutex.lock()?;
                bump(counter);
                drop(g);
                Ok(())
            })
        })?);
        results[2].push(two_processes(&map, window, &|stop| {
            until_stopped(stop, || {
                pthread_lock(pthread)?;
                bump(counter);
                pthread_unlock(pthread);
                Ok(())
            })
        })?);
        results[3].push(two_processes(&map, window, &|stop| {
            until_stopped(stop, || {
                let g = raw.lock().map_err(|e| e.to_string())?;
                bump(counter);
                drop(g);
                Ok(())
            })
        })?);
    }
    let names = [
        "std::sync::Mutex, 2 threads",
        "mmkit RobustMutex",
        "pthread robust pshared mutex",
        "raw_sync Mutex",
    ];
    let medians: Vec<f64> = results.into_iter().map(|v| median(v) / 1e6).collect();
    for (name, value) in names.iter().zip(&medians) {
        row("contended, 2 processes", name, *value, "M lock/s", medians[0]);
    }
    Ok(())
}

fn std_two_threads(window: Duration) -> f64 {
    let m = std::sync::Mutex::new(0u64);
    let stop = AtomicU64::new(0);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    until_stopped(&stop, || {
                        if let Ok(mut g) = m.lock() {
                            *g = black_box(*g + 1);
                        }
                        Ok(())
                    })
                    .unwrap_or(0)
                })
            })
            .collect();
        std::thread::sleep(window);
        stop.store(1, Ordering::SeqCst);
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- wake latency

/// What the waiting child does for sample `i` (1-based) before stamping.
type WaitFn<'a> = &'a dyn Fn(u64) -> BenchResult<()>;
/// What the notifying parent does for sample `i`, right after the stamp.
type NotifyFn<'a> = &'a dyn Fn(u64) -> BenchResult<()>;

/// Measures notify → waiter running, across processes, for samples
/// `first + 1 ..= first + count`; returns the latencies in microseconds.
/// The parent sleeps before each notify so the waiter is asleep.
fn wake_samples(
    map: &Mapping,
    first: u64,
    count: usize,
    wait: WaitFn<'_>,
    notify: NotifyFn<'_>,
) -> BenchResult<Vec<f64>> {
    let acks = events(map, DONE)?;
    let stamp = map.atomic_u64(STAMP)?;
    let base = acks.get();
    let slots: Vec<&AtomicU64> =
        (0..count as u64).map(|i| map.atomic_u64(SAMPLES + 8 * i)).collect::<Result<_, _>>()?;
    let child = fork_child(|| {
        for (i, slot) in (first + 1..).zip(&slots) {
            wait(i)?;
            let woke = mono_ns();
            slot.store(woke.saturating_sub(stamp.load(Ordering::SeqCst)), Ordering::Relaxed);
            acks.advance(1);
        }
        Ok(())
    })?;
    for (k, i) in (first + 1..=first + count as u64).enumerate() {
        std::thread::sleep(Duration::from_micros(200));
        stamp.store(mono_ns(), Ordering::SeqCst);
        notify(i)?;
        acks.wait_for(base + k as u64 + 1, &WaitPolicy::BALANCED, Some(Duration::from_secs(30)))?;
    }
    reap(child)?;
    Ok(slots.iter().map(|s| s.load(Ordering::Relaxed) as f64 / 1000.0).collect())
}

/// A wake-latency peer: its name, its mapping, and how it waits and notifies.
struct WakePeer<'a> {
    name: &'static str,
    map: &'a Mapping,
    wait: WaitFn<'a>,
    notify: NotifyFn<'a>,
}

fn wake_latency(args: &Args) -> BenchResult<()> {
    const CHUNKS: usize = 5;
    let chunk = (args.wakes / CHUNKS).clamp(2, ((MAP_LEN as u64 - SAMPLES) / 8) as usize);
    let maps = [shared_map()?, shared_map()?, shared_map()?, shared_map()?];

    let m = pthread_mutex(&maps[0])?;
    let cond = pthread_cond(&maps[0])?;
    let seq = maps[0].checked_ptr("seq", COUNTER, 8)?.cast::<u64>();
    let pthread_wait = |i| {
        pthread_lock(m)?;
        // SAFETY: `seq` is in the mapping and only accessed under `m`.
        while unsafe { seq.read_volatile() } < i {
            // SAFETY: `cond` and `m` are initialised pshared objects; we hold `m`.
            unsafe { libc::pthread_cond_wait(cond, m) };
        }
        pthread_unlock(m);
        Ok(())
    };
    let pthread_notify = |i| {
        pthread_lock(m)?;
        // SAFETY: as above.
        unsafe { seq.write_volatile(i) };
        // SAFETY: `cond` is initialised.
        unsafe { libc::pthread_cond_signal(cond) };
        pthread_unlock(m);
        Ok(())
    };
    let park = events(&maps[1], EVENTS)?;
    let park_wait = |i| Ok(park.wait_for(i, &WaitPolicy::PARK, None).map(drop)?);
    let park_notify = |_| {
        park.advance(1);
        Ok(())
    };
    let spin = events(&maps[2], EVENTS)?;
    let spin_wait = |i| Ok(spin.wait_for(i, &WaitPolicy::SPIN, None).map(drop)?);
    let spin_notify = |_| {
        spin.advance(1);
        Ok(())
    };
    let mem = maps[3].checked_ptr("raw_sync event", RAW_EVENT, 1024)?;
    // SAFETY: 1 KiB of otherwise unused shared memory for the event.
    let (event, _) = unsafe { Event::new(mem, true) }.map_err(|e| e.to_string())?;
    let raw_wait = |_| event.wait(Timeout::Infinite).map_err(|e| e.to_string().into());
    let raw_notify = |_| event.set(EventState::Signaled).map_err(|e| e.to_string().into());

    let peers = [
        WakePeer {
            name: "pthread condvar (pshared)",
            map: &maps[0],
            wait: &pthread_wait,
            notify: &pthread_notify,
        },
        WakePeer {
            name: "mmkit EventCount, PARK policy",
            map: &maps[1],
            wait: &park_wait,
            notify: &park_notify,
        },
        WakePeer {
            name: "mmkit EventCount, SPIN policy (burns a core)",
            map: &maps[2],
            wait: &spin_wait,
            notify: &spin_notify,
        },
        WakePeer { name: "raw_sync Event (auto-reset)", map: &maps[3], wait: &raw_wait, notify: &raw_notify },
    ];
    // Interleave the peers in chunks so that machine noise hits all alike.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    for c in 0..CHUNKS {
        for (peer, out) in peers.iter().zip(&mut samples) {
            out.extend(wake_samples(peer.map, (c * chunk) as u64, chunk, peer.wait, peer.notify)?);
        }
    }
    let percentiles: Vec<(f64, f64)> = samples
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() * 99 / 100])
        })
        .collect();
    let base = percentiles[0];
    for (peer, (p50, _)) in peers.iter().zip(&percentiles) {
        row("wake latency p50, 2 processes", peer.name, *p50, "µs", base.0);
    }
    for (peer, (_, p99)) in peers.iter().zip(&percentiles) {
        row("wake latency p99, 2 processes", peer.name, *p99, "µs", base.1);
    }
    Ok(())
}

/// A process-shared pthread condition variable placed in the mapping.
fn pthread_cond(map: &Mapping) -> BenchResult<*mut libc::pthread_cond_t> {
    let kind = PthreadKind {
        what: "pthread pshared condvar",
        attr_init: libc::pthread_condattr_init,
        attr_setpshared: libc::pthread_condattr_setpshared,
        attr_extra: None,
        init: libc::pthread_cond_init,
        attr_destroy: libc::pthread_condattr_destroy,
    };
    place_pthread(map, PTHREAD_COND, kind)
}

// ---------------------------------------------------------------- dead holder

/// SIGKILLs a child holding the lock while this process waits in lock();
/// returns the delays from the kill to lock() returning "owner died", in
/// microseconds.
fn kill_holder(
    map: &Mapping,
    kills: usize,
    hold: &dyn Fn() -> BenchResult<()>,
    lock_after_death: &dyn Fn() -> BenchResult<bool>,
) -> BenchResult<Vec<f64>> {
    let ready = events(map, READY)?;
    let mut delays = Vec::new();
    for _ in 0..kills {
        let round = ready.get() + 1;
        let child = fork_child(|| {
            hold()?;
            ready.advance(1);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })?;
        ready.wait_for(round, &WaitPolicy::BALANCED, Some(Duration::from_secs(30)))?;
        let killed_at = AtomicU64::new(0);
        let died = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                killed_at.store(mono_ns(), Ordering::SeqCst);
                let _ = rustix::process::kill_process(child, rustix::process::Signal::KILL);
            });
            lock_after_death()
        })?;
        let delay = mono_ns().saturating_sub(killed_at.load(Ordering::SeqCst));
        if !died {
            return Err("lock after the holder's death did not report it".into());
        }
        delays.push(delay as f64 / 1000.0);
        reap(child)?;
    }
    Ok(delays)
}

fn dead_holder(args: &Args) -> BenchResult<()> {
    let kills = args.kills.max(1);
    let map = shared_map()?;
    let mutex = RobustMutex::at(&map, MMKIT_MUTEX)?;
    let pthread = pthread_mutex(&map)?;
    let mmkit = kill_holder(
        &map,
        kills,
        &|| {
            std::mem::forget(mutex.lock()?);
            Ok(())
        },
        &|| {
            let outcome = mutex.lock()?;
            let died = outcome.owner_died();
            outcome.into_guard().make_consistent();
            Ok(died)
        },
    )?;
    let posix = kill_holder(&map, kills, &|| pthread_lock(pthread).map(drop), &|| {
        let died = pthread_lock(pthread)?;
        pthread_unlock(pthread);
        Ok(died)
    })?;
    let (m50, p50) = (median(mmkit.clone()), median(posix.clone()));
    let max = |v: Vec<f64>| v.into_iter().fold(0.0, f64::max);
    row(
        "SIGKILLed holder → next lock() reports owner died, median",
        "pthread robust (kernel robust list)",
        p50,
        "µs",
        p50,
    );
    row(
        "SIGKILLed holder → next lock() reports owner died, median",
        "mmkit RobustMutex (liveness)",
        m50,
        "µs",
        p50,
    );
    row("SIGKILLed holder → owner died, worst", "pthread robust (kernel robust list)", max(posix), "µs", 0.0);
    row("SIGKILLed holder → owner died, worst", "mmkit RobustMutex (liveness)", max(mmkit), "µs", 0.0);
    Ok(())
}
