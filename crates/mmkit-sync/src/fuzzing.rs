//! Entry points shared by the `cargo fuzz` target and the normal tests.
//! Not a stable API.

use std::time::Duration;

use mmkit_region::{Access, Mapping, Share};

use crate::{EventCount, Notifier, ProcessToken, RobustMutex, WaitPolicy};

/// Lays `data` over a mutex, an event count and a notifier, as a corrupt
/// or hostile peer could leave them, then uses all three; also parses
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
    if let Ok(notifier) = Notifier::at(&map, 40) {
        notifier.notify_all();
        let _ = notifier.wait_until(|| false, &WaitPolicy::BALANCED, Some(Duration::ZERO));
    }
}
