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
use mmkit_sync::{EventCount, RobustMutex, WaitPolicy};
use raw_sync::Timeout;
use raw_sync::events::{Event, EventImpl, EventInit, EventState};
use raw_sync::locks::{LockImpl, LockInit, Mutex as RawMutex};

type BoxError = Box<dyn std::error::Error>;
type BenchResult<T> = Result<T, BoxError>;

/// Options of the `sync` suite.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repetitions of each measurement; the table shows medians.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Lock+unlock pairs per uncontended repetition.
    #[arg(long, default_value_t = 2_000_000)]
    iters: u64,
    /// Lock+unlock pairs per process in the contended runs.
    #[arg(long, default_value_t = 500_000)]
    contended_iters: u64,
    /// Wake-latency samples per peer.
    #[arg(long, default_value_t = 1500)]
    wakes: usize,
    /// Holder kills per peer in the dead-holder measurement.
    #[arg(long, default_value_t = 10)]
    kills: usize,
}

/// Runs the suite and prints its table.
pub fn run(args: Args) -> BenchResult<()> {
    let reps = args.reps.max(1);
    println!("sync suite: medians of {reps} repetitions; ratios are against the first row of each group");
    println!();
    println!("| measurement | implementation | result | ratio |");
    println!("|---|---|---|---|");
    uncontended(&args, reps)?;
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

fn reap(pid: rustix::process::Pid) -> BenchResult<()> {
    let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())?;
    match status {
        Some((_, s)) if s.exit_status() == Some(0) || s.terminating_signal().is_some() => Ok(()),
        other => Err(format!("bench child failed: {other:?}").into()),
    }
}

/// A process-shared, robust pthread mutex placed in the mapping.
fn pthread_mutex(map: &Mapping) -> BenchResult<*mut libc::pthread_mutex_t> {
    let ptr = map.aligned_ptr("pthread mutex", PTHREAD_MUTEX, 16)?.cast::<libc::pthread_mutex_t>();
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is initialised by pthread_mutexattr_init before use;
    // `ptr` has room for a pthread_mutex_t (128 bytes reserved) and is
    // aligned; nothing else uses it yet.
    let rc = unsafe {
        let a = attr.as_mut_ptr();
        let mut rc = libc::pthread_mutexattr_init(a);
        rc |= libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED);
        rc |= libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST);
        rc |= libc::pthread_mutex_init(ptr, a);
        libc::pthread_mutexattr_destroy(a);
        rc
    };
    if rc != 0 {
        return Err("pthread robust mutex init failed".into());
    }
    Ok(ptr)
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
    let names =
        ["std::sync::Mutex (in-process)", "mmkit RobustMutex", "pthread robust pshared mutex", "raw_sync Mutex"];
    let medians: Vec<f64> = results.into_iter().map(median).collect();
    for (name, value) in names.iter().zip(&medians) {
        row("uncontended lock+unlock", name, *value, "ns", medians[0]);
    }
    Ok(())
}

// ---------------------------------------------------------------- contended

/// Runs `work` in a forked child and in this process at once, after a
/// start barrier; returns total operations per second.
fn two_processes(map: &Mapping, n: u64, work: &dyn Fn(u64) -> BenchResult<()>) -> BenchResult<f64> {
    let (ready, go, done) = (events(map, READY)?, events(map, GO)?, events(map, DONE)?);
    let round = go.get() + 1;
    let child = fork_child(|| {
        ready.advance(1);
        go.wait_for(round, &WaitPolicy::BALANCED, None)?;
        work(n)?;
        done.advance(1);
        Ok(())
    })?;
    ready.wait_for(round, &WaitPolicy::BALANCED, None)?;
    let start = Instant::now();
    go.advance(1);
    work(n)?;
    done.wait_for(round, &WaitPolicy::BALANCED, None)?;
    let secs = start.elapsed().as_secs_f64();
    reap(child)?;
    Ok(2.0 * n as f64 / secs)
}

fn contended(args: &Args, reps: usize) -> BenchResult<()> {
    let map = shared_map()?;
    let counter = map.checked_ptr("counter", COUNTER, 8)?.cast::<u64>();
    let mutex = RobustMutex::at(&map, MMKIT_MUTEX)?;
    let pthread = pthread_mutex(&map)?;
    let raw = raw_sync_mutex(&map)?;
    let n = args.contended_iters;
    let reps = reps.min(3);
    let mut results: [Vec<f64>; 4] = Default::default();
    for _ in 0..reps {
        results[0].push(std_two_threads(n));
        results[1].push(two_processes(&map, n, &|n| {
            for _ in 0..n {
                let g = mutex.lock()?;
                bump(counter);
                drop(g);
            }
            Ok(())
        })?);
        results[2].push(two_processes(&map, n, &|n| {
            for _ in 0..n {
                pthread_lock(pthread)?;
                bump(counter);
                pthread_unlock(pthread);
            }
            Ok(())
        })?);
        results[3].push(two_processes(&map, n, &|n| {
            for _ in 0..n {
                let g = raw.lock().map_err(|e| e.to_string())?;
                bump(counter);
                drop(g);
            }
            Ok(())
        })?);
    }
    // SAFETY: all children are reaped; nobody else touches the counter.
    let total = unsafe { counter.read_volatile() };
    if total != 3 * reps as u64 * 2 * n {
        return Err(format!("contended counter is {total}, mutual exclusion failed").into());
    }
    let names = ["std::sync::Mutex, 2 threads", "mmkit RobustMutex", "pthread robust pshared mutex", "raw_sync Mutex"];
    let medians: Vec<f64> = results.into_iter().map(|v| median(v) / 1e6).collect();
    for (name, value) in names.iter().zip(&medians) {
        row("contended, 2 processes", name, *value, "M lock/s", medians[0]);
    }
    Ok(())
}

fn std_two_threads(n: u64) -> f64 {
    let m = std::sync::Mutex::new(0u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..n {
                    if let Ok(mut g) = m.lock() {
                        *g = black_box(*g + 1);
                    }
                }
            });
        }
    });
    2.0 * n as f64 / start.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- wake latency

/// What the waiting child does for sample `i` (1-based) before stamping.
type WaitFn<'a> = &'a dyn Fn(u64) -> BenchResult<()>;
/// What the notifying parent does for sample `i`, right after the stamp.
type NotifyFn<'a> = &'a dyn Fn(u64) -> BenchResult<()>;

/// Measures notify → waiter running, across processes; returns (p50, p99)
/// in microseconds. The parent sleeps before each notify so the waiter is
/// asleep in the kernel.
fn wake_samples(map: &Mapping, samples: usize, wait: WaitFn<'_>, notify: NotifyFn<'_>) -> BenchResult<(f64, f64)> {
    let acks = events(map, DONE)?;
    let stamp = map.atomic_u64(STAMP)?;
    let base = acks.get();
    let slots: Vec<&AtomicU64> =
        (0..samples as u64).map(|i| map.atomic_u64(SAMPLES + 8 * i)).collect::<Result<_, _>>()?;
    let child = fork_child(|| {
        for (i, slot) in slots.iter().enumerate() {
            wait(i as u64 + 1)?;
            let woke = mono_ns();
            slot.store(woke.saturating_sub(stamp.load(Ordering::SeqCst)), Ordering::Relaxed);
            acks.advance(1);
        }
        Ok(())
    })?;
    for i in 1..=samples as u64 {
        std::thread::sleep(Duration::from_micros(200));
        stamp.store(mono_ns(), Ordering::SeqCst);
        notify(i)?;
        acks.wait_for(base + i, &WaitPolicy::BALANCED, Some(Duration::from_secs(30)))?;
    }
    reap(child)?;
    let mut v: Vec<f64> = slots.iter().map(|s| s.load(Ordering::Relaxed) as f64 / 1000.0).collect();
    v.sort_by(f64::total_cmp);
    Ok((v[v.len() / 2], v[v.len() * 99 / 100]))
}

fn wake_latency(args: &Args) -> BenchResult<()> {
    let samples = args.wakes.clamp(10, ((MAP_LEN as u64 - SAMPLES) / 8) as usize);
    let mut rows = Vec::new();

    let map = shared_map()?;
    let m = pthread_mutex(&map)?;
    let cond = pthread_cond(&map)?;
    let seq = map.checked_ptr("seq", COUNTER, 8)?.cast::<u64>();
    let pthread = wake_samples(
        &map,
        samples,
        &|i| {
            pthread_lock(m)?;
            // SAFETY: `seq` is in the mapping and only accessed under `m`.
            while unsafe { seq.read_volatile() } < i {
                // SAFETY: `cond` and `m` are initialised pshared objects; we hold `m`.
                unsafe { libc::pthread_cond_wait(cond, m) };
            }
            pthread_unlock(m);
            Ok(())
        },
        &|i| {
            pthread_lock(m)?;
            // SAFETY: as above.
            unsafe { seq.write_volatile(i) };
            // SAFETY: `cond` is initialised.
            unsafe { libc::pthread_cond_signal(cond) };
            pthread_unlock(m);
            Ok(())
        },
    )?;
    rows.push(("pthread condvar (pshared)", pthread));

    for (name, policy) in
        [("mmkit EventCount, PARK policy", WaitPolicy::PARK), ("mmkit EventCount, SPIN policy", WaitPolicy::SPIN)]
    {
        let map = shared_map()?;
        let ec = events(&map, EVENTS)?;
        let r = wake_samples(
            &map,
            samples,
            &|i| Ok(ec.wait_for(i, &policy, None).map(drop)?),
            &|_| {
                ec.advance(1);
                Ok(())
            },
        )?;
        rows.push((name, r));
    }

    let map = shared_map()?;
    let mem = map.checked_ptr("raw_sync event", RAW_EVENT, 1024)?;
    // SAFETY: 1 KiB of otherwise unused shared memory for the event.
    let (event, _) = unsafe { Event::new(mem, true) }.map_err(|e| e.to_string())?;
    let raw = wake_samples(
        &map,
        samples,
        &|_| event.wait(Timeout::Infinite).map_err(|e| e.to_string().into()),
        &|_| event.set(EventState::Signaled).map_err(|e| e.to_string().into()),
    )?;
    rows.push(("raw_sync Event (auto-reset)", raw));

    let base = rows[0].1;
    for (name, (p50, p99)) in rows {
        row("wake latency p50, 2 processes", name, p50, "µs", base.0);
        row("wake latency p99, 2 processes", name, p99, "µs", base.1);
    }
    Ok(())
}

fn pthread_cond(map: &Mapping) -> BenchResult<*mut libc::pthread_cond_t> {
    let ptr = map.aligned_ptr("pthread cond", PTHREAD_COND, 16)?.cast::<libc::pthread_cond_t>();
    let mut attr = MaybeUninit::<libc::pthread_condattr_t>::uninit();
    // SAFETY: as in `pthread_mutex`, for a condition variable.
    let rc = unsafe {
        let a = attr.as_mut_ptr();
        let mut rc = libc::pthread_condattr_init(a);
        rc |= libc::pthread_condattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED);
        rc |= libc::pthread_cond_init(ptr, a);
        libc::pthread_condattr_destroy(a);
        rc
    };
    if rc != 0 {
        return Err("pthread pshared condvar init failed".into());
    }
    Ok(ptr)
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
    let posix = kill_holder(
        &map,
        kills,
        &|| pthread_lock(pthread).map(drop),
        &|| {
            let died = pthread_lock(pthread)?;
            pthread_unlock(pthread);
            Ok(died)
        },
    )?;
    let (m50, p50) = (median(mmkit.clone()), median(posix.clone()));
    let max = |v: Vec<f64>| v.into_iter().fold(0.0, f64::max);
    row("SIGKILLed holder → next lock() reports owner died, median", "pthread robust (kernel robust list)", p50, "µs", p50);
    row("SIGKILLed holder → next lock() reports owner died, median", "mmkit RobustMutex (liveness)", m50, "µs", p50);
    row("SIGKILLed holder → owner died, worst", "pthread robust (kernel robust list)", max(posix), "µs", 0.0);
    row("SIGKILLed holder → owner died, worst", "mmkit RobustMutex (liveness)", max(mmkit), "µs", 0.0);
    Ok(())
}
