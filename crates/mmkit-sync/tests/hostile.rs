//! Hostile words written into a lock or a notifier by another process: a
//! waiter count forged to the top, a holder token naming the caller's own
//! thread under another start time, a copy of the caller's token in a
//! reader slot. Each is got past, never waited for without end. Found by a
//! review; each test failed before its fix.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmkit_region::{Access, Mapping, Share};
use mmkit_sync::{Notifier, ProcessToken, RobustMutex, RobustRwLock};

fn shared() -> Mapping {
    Mapping::anonymous(4096, Share::Shared).unwrap()
}

/// How long a parked waiter takes to wake after its condition holds and
/// `notify_all` ran, with the waiter count forged to `forged` first.
fn wake_latency(forged: Option<u32>) -> Duration {
    let map = shared();
    let notifier = Notifier::at(&map, 0).unwrap();
    if let Some(w) = forged {
        map.atomic_u32(4).unwrap().store(w, Ordering::SeqCst);
    }
    let flag = map.atomic_u32(8).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let t = Instant::now();
            assert!(notifier.park(|| flag.load(Ordering::SeqCst) == 1, Some(Duration::from_secs(5))));
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        flag.store(1, Ordering::SeqCst);
        notifier.notify_all();
        waiter.join().unwrap()
    })
}

#[test]
fn a_waiter_count_forged_to_the_top_loses_no_wake() {
    for forged in [None, Some(u32::MAX), Some(u32::MAX - 1)] {
        let t = wake_latency(forged);
        assert!(t < Duration::from_secs(2), "forged {forged:?}: woke after {t:?}");
    }
}

/// A holder token with this thread's id and another start time (0, as a
/// token made without `/proc`): this thread does not hold the lock under
/// it, so it takes the lock over instead of waiting for itself.
#[test]
fn a_token_naming_this_thread_under_another_start_is_taken_over() {
    let me = ProcessToken::current();
    let forged = ProcessToken::from_parts(me.pid(), 0).unwrap();
    assert_ne!(forged, me);
    let map = shared();
    map.atomic_u64(0).unwrap().store(forged.to_raw(), Ordering::SeqCst);
    let mutex = RobustMutex::at(&map, 0).unwrap();
    let outcome = mutex.lock_timeout(Duration::from_secs(5)).unwrap().expect("taken over");
    assert!(outcome.owner_died());
    let rw_map = shared();
    rw_map.atomic_u64(0).unwrap().store(forged.to_raw(), Ordering::SeqCst);
    let rw = RobustRwLock::at(&rw_map, 0).unwrap();
    assert!(rw.write_timeout(Duration::from_secs(5)).unwrap().is_some());
}

/// A copy of this thread's token in a reader slot while it holds no read
/// guard: its writer frees the slot instead of waiting for itself.
#[test]
fn a_copy_of_this_threads_token_in_a_reader_slot_is_freed() {
    let map = shared();
    let rw = RobustRwLock::at(&map, 0).unwrap();
    map.atomic_u64(24 + 8 * 7).unwrap().store(ProcessToken::current().to_raw(), Ordering::SeqCst);
    assert!(rw.write_timeout(Duration::from_secs(5)).unwrap().is_some());
}
