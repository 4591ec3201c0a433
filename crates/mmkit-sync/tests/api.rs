//! Single-process behaviour: placement checks, timeouts, tokens, threads.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmkit_region::{Access, MapOptions, Mapping, Mode, Share};
use mmkit_sync::{
    Error, EventCount, Liveness, LockOutcome, MAX_PARK_SLICE, Notifier, ProcessToken, RobustMutex,
    WaitOutcome, WaitPolicy, futex,
};
use proptest::prelude::*;

fn shared(len: usize) -> Mapping {
    Mapping::anonymous(len, Share::Shared).unwrap()
}

#[test]
fn misaligned_out_of_bounds_and_read_only_placements_are_errors() {
    let map = shared(4096);
    assert!(matches!(RobustMutex::at(&map, 4), Err(Error::Misaligned { align: 8, .. })));
    assert!(matches!(EventCount::at(&map, 12), Err(Error::Misaligned { align: 8, .. })));
    assert!(matches!(Notifier::at(&map, 2), Err(Error::Misaligned { align: 4, .. })));
    // Aligned but past the end, including a range that straddles the end.
    assert!(matches!(
        RobustMutex::at(&map, 4096 - 16),
        Err(Error::Region(mmkit_region::Error::OutOfBounds { .. }))
    ));
    assert!(matches!(EventCount::at(&map, 4096), Err(Error::Region(_))));
    assert!(matches!(Notifier::at(&map, u64::MAX - 3), Err(Error::Region(_))));
    // The last slot that fits is fine.
    assert!(RobustMutex::at(&map, 4096 - 24).is_ok());
    assert!(EventCount::at(&map, 4096 - 16).is_ok());
    assert!(Notifier::at(&map, 4096 - 8).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro");
    std::fs::write(&path, [0u8; 64]).unwrap();
    let read_only = MapOptions::new().mode(Mode::ReadOnly).map_path(&path).unwrap();
    let err = RobustMutex::at(&read_only, 0).unwrap_err();
    assert!(matches!(err, Error::Region(mmkit_region::Error::ReadOnly { .. })), "{err}");
    assert!(err.to_string().contains("RobustMutex::at"), "{err}");
}

#[test]
fn zeroed_memory_is_an_unlocked_consistent_mutex() {
    let map = shared(4096);
    let mutex = RobustMutex::at(&map, 64).unwrap();
    assert_eq!(mutex.owner(), None);
    let outcome = mutex.lock().unwrap();
    assert!(matches!(outcome, LockOutcome::Acquired(_)));
    assert_eq!(mutex.owner(), Some(ProcessToken::current()));
    drop(outcome);
    assert_eq!(mutex.owner(), None);
}

#[test]
fn threads_count_exactly_under_the_mutex() {
    let map = shared(4096);
    let mutex = RobustMutex::at(&map, 0).unwrap();
    let counter = map.checked_ptr("counter", 64, 8).unwrap() as usize;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..20_000 {
                    let guard = mutex.lock().unwrap().into_guard();
                    let cell = counter as *mut u64;
                    // SAFETY: in bounds and aligned; only touched under the mutex.
                    let value = unsafe { cell.read_volatile() };
                    if i % 256 == 0 {
                        std::thread::yield_now();
                    }
                    // SAFETY: as above.
                    unsafe { cell.write_volatile(value + 1) };
                    drop(guard);
                }
            });
        }
    });
    // SAFETY: as above; all threads are done.
    assert_eq!(unsafe { (counter as *const u64).read_volatile() }, 80_000);
    assert_eq!(mutex.owner(), None);
}

#[test]
fn relocking_from_the_holding_thread_is_an_error() {
    let mutex = RobustMutex::new();
    let _guard = mutex.lock().unwrap();
    assert!(matches!(mutex.lock(), Err(Error::WouldDeadlock { .. })));
    assert!(matches!(mutex.try_lock(), Err(Error::WouldDeadlock { .. })));
    assert!(matches!(mutex.lock_timeout(Duration::from_millis(1)), Err(Error::WouldDeadlock { .. })));
}

#[test]
fn lock_timeout_and_try_lock_respect_a_live_holder() {
    let mutex = RobustMutex::new();
    let events = EventCount::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let guard = mutex.lock().unwrap();
            events.advance(1);
            events.wait_for(2, &WaitPolicy::PARK, Some(Duration::from_secs(20))).unwrap();
            drop(guard);
        });
        events.wait_for(1, &WaitPolicy::PARK, Some(Duration::from_secs(20))).unwrap();
        assert!(mutex.try_lock().unwrap().is_none());
        let start = Instant::now();
        assert!(mutex.lock_timeout(Duration::from_millis(40)).unwrap().is_none());
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(40) && waited < Duration::from_secs(10), "{waited:?}");
        events.advance(1);
        // Now released: the lock comes well within the timeout.
        let outcome = mutex.lock_timeout(Duration::from_secs(20)).unwrap().unwrap();
        assert!(!outcome.owner_died());
    });
}

#[test]
fn a_thread_that_exits_holding_the_lock_counts_as_dead() {
    let mutex = RobustMutex::new();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(mutex.lock().unwrap()));
    });
    let holder = mutex.owner().unwrap();
    // pthread_join returns as the kernel clears the tid; the task may
    // linger for a moment.
    let start = Instant::now();
    while holder.is_alive() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let outcome = mutex.lock().unwrap();
    assert!(outcome.owner_died());
    assert!(mutex.is_inconsistent());
    outcome.into_guard().make_consistent();
    assert!(!mutex.is_inconsistent());
    assert!(!mutex.lock().unwrap().owner_died());
}

#[test]
fn waits_time_out_under_every_policy() {
    let events = EventCount::new();
    let notifier = Notifier::new();
    let spin = WaitPolicy { spins: 1000, yields: 2, park: false };
    for policy in [WaitPolicy::PARK, WaitPolicy::BALANCED, spin] {
        let start = Instant::now();
        let err = events.wait_for(1, &policy, Some(Duration::from_millis(30))).unwrap_err();
        let waited = start.elapsed();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(
            waited >= Duration::from_millis(30) && waited < Duration::from_secs(10),
            "{policy:?}: {waited:?}"
        );

        let start = Instant::now();
        assert!(!notifier.wait_until(|| false, &policy, Some(Duration::from_millis(20))));
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(notifier.waiters(), 0);
    }
    // A zero timeout still reports a condition that already holds.
    events.advance(3);
    assert_eq!(events.wait_for(2, &WaitPolicy::PARK, Some(Duration::ZERO)).unwrap(), 3);
}

#[test]
fn raw_futex_outcomes() {
    let word = std::sync::atomic::AtomicU32::new(7);
    assert_eq!(futex::wait(&word, 8, None).unwrap(), WaitOutcome::ValueChanged);
    assert_eq!(futex::wait(&word, 7, Some(Duration::from_millis(5))).unwrap(), WaitOutcome::Timeout);
    assert_eq!(futex::wake(&word, 1), 0);
}

#[test]
fn notify_wakes_parked_threads() {
    let events = EventCount::new();
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..3)
            .map(|_| s.spawn(|| events.wait_for(5, &WaitPolicy::PARK, Some(Duration::from_secs(20)))))
            .collect();
        // `park` never re-checks by itself, so only a real notify wakes
        // these before the timeout (after it, the condition holds anyway:
        // the time taken is what tells a lost notify).
        let parked: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let start = Instant::now();
                    let ready = events.notifier().park(|| events.get() >= 5, Some(Duration::from_secs(20)));
                    (ready, start.elapsed())
                })
            })
            .collect();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(2));
            events.advance(1);
        }
        for w in waiters {
            assert!(w.join().unwrap().unwrap() >= 5);
        }
        for p in parked {
            let (ready, waited) = p.join().unwrap();
            assert!(
                ready && waited < Duration::from_secs(10),
                "a parked thread missed its notify: {waited:?}"
            );
        }
    });
    assert_eq!(events.notifier().waiters(), 0);
}

#[test]
fn pid_reuse_is_detected_by_start_time() {
    let me = ProcessToken::current_process();
    assert_eq!(me.liveness(), Liveness::Alive);
    let impostor = ProcessToken::from_parts(me.pid(), me.start_ticks() + 1).unwrap();
    assert_eq!(impostor.liveness(), Liveness::Dead, "same pid, different start time");
    let earlier = ProcessToken::from_parts(me.pid(), me.start_ticks() - 1).unwrap();
    assert_eq!(earlier.liveness(), Liveness::Dead);
    assert_eq!(ProcessToken::from_raw(0).liveness(), Liveness::Dead);
    assert!(ProcessToken::of_pid(0).is_err());
    assert!(ProcessToken::of_pid(1 << 22).is_err());
}

proptest! {
    #[test]
    fn token_packs_and_unpacks(tid in 1u32..(1 << 22), start in 0u64..(1 << 42)) {
        let token = ProcessToken::from_parts(tid, start).unwrap();
        prop_assert_eq!(token.pid(), tid);
        prop_assert_eq!(token.start_ticks(), start);
        prop_assert_ne!(token.to_raw(), 0);
        prop_assert_eq!(ProcessToken::from_raw(token.to_raw()), token);
    }

    #[test]
    fn token_rejects_values_that_do_not_fit(tid in (1u32 << 22).., start in (1u64 << 42)..) {
        prop_assert!(ProcessToken::from_parts(tid, 0).is_none());
        prop_assert!(ProcessToken::from_parts(1, start).is_none());
        prop_assert!(ProcessToken::from_parts(0, 0).is_none());
    }

    /// EventCount against a plain integer model.
    #[test]
    fn event_count_matches_model(ops in proptest::collection::vec((any::<bool>(), 0u64..1000), 0..64)) {
        let events = EventCount::new();
        let mut model = 0u64;
        for (is_publish, n) in ops {
            if is_publish {
                events.publish(n);
                model = model.max(n);
            } else {
                prop_assert_eq!(events.advance(n), model + n);
                model += n;
            }
            prop_assert_eq!(events.get(), model);
            prop_assert_eq!(events.wait_for(model, &WaitPolicy::PARK, Some(Duration::ZERO)).unwrap(), model);
        }
    }
}

proptest! {
    /// The fuzz target's logic: hostile bytes in shared memory never panic.
    #[test]
    fn hostile_shared_state_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        mmkit_sync::fuzzing::shared_state(&data);
    }
}

#[test]
fn hostile_shared_state_corruption_sweep() {
    // Every single-byte value at every position of the three primitives.
    for pos in 0..48 {
        for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut data = [0u8; 48];
            data[pos] = byte;
            mmkit_sync::fuzzing::shared_state(&data);
        }
    }
    mmkit_sync::fuzzing::shared_state(
        b"1 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99999999999999999999999",
    );
}

#[test]
fn parked_waits_outlast_the_park_slice() {
    // A wait longer than MAX_PARK_SLICE keeps waiting after each slice
    // instead of reporting a timeout early.
    let events = EventCount::new();
    let timeout = MAX_PARK_SLICE * 3;
    for policy in [WaitPolicy::PARK, WaitPolicy::BALANCED] {
        let start = Instant::now();
        assert!(events.wait_for(1, &policy, Some(timeout)).is_err());
        assert!(start.elapsed() >= timeout, "{policy:?} gave up after {:?}", start.elapsed());
    }
    // A state change whose notify never comes (its maker was killed in
    // between) is still seen by an unbounded wait, at the next slice.
    let notifier = Notifier::new();
    let flag = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let waiter =
            s.spawn(|| notifier.wait_until(|| flag.load(Ordering::Acquire), &WaitPolicy::PARK, None));
        std::thread::sleep(MAX_PARK_SLICE * 2);
        flag.store(true, Ordering::Release);
        assert!(waiter.join().unwrap(), "an unbounded wait gave up");
    });
}
