//! Entry points shared by the `cargo fuzz` target and the normal tests.
//! Not a stable API.

use std::time::Duration;

use mmkit_region::{Access, Mapping, Share};

use crate::{EventCount, Notifier, ProcessToken, RobustMutex, RobustRwLock, WaitPolicy};

/// Lays `data` over a mutex, an event count, a notifier and a rwlock, as a
/// corrupt or hostile peer could leave them, then uses all four; also parses
/// `data` as a `/proc/<pid>/stat` line. Must never panic or hang.
pub fn shared_state(data: &[u8]) {
    let _ = crate::token::parse_stat(data);
    let Ok(map) = Mapping::anonymous(4096, Share::Shared) else { return };
    let len = data.len().min(48);
    if map.write_at(0, &data[..len]).is_err() {
        return;
    }
    if let Ok(mutex) = RobustMutex::at(&map, 0) {
        let _ = mutex.owner().map(ProcessToken::liveness);
        if let Ok(Some(outcome)) = mutex.try_lock() {
            outcome.into_guard().make_consistent();
        }
        drop(mutex.lock_timeout(Duration::ZERO));
    }
    if let Ok(events) = EventCount::at(&map, 24) {
        let target = events.get().saturating_add(1);
        let _ = events.wait_for(target, &WaitPolicy::PARK, Some(Duration::ZERO));
        events.advance(1);
        events.publish(target);
    }
    let rw_len = data.len().min(RobustRwLock::SIZE);
    let rw = map.write_at(1024, &data[..rw_len]).ok().and_then(|()| RobustRwLock::at(&map, 1024).ok());
    if let Some(rw) = rw {
        let _ = rw.reader_count();
        drop(rw.try_read());
        if let Ok(Some(outcome)) = rw.try_write() {
            outcome.into_guard().make_consistent();
        }
    }
    if let Ok(notifier) = Notifier::at(&map, 40) {
        notifier.notify_all();
        let _ = notifier.wait_until(|| false, &WaitPolicy::BALANCED, Some(Duration::ZERO));
    }
}
