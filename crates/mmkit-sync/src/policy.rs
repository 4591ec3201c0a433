//! How a waiter passes the time: spin, yield, then park.

/// Waiting strategy: spin `spins` times, then yield the CPU `yields` times,
/// then, if `park` is set, sleep in the kernel (futex) until notified.
///
/// Without `park`, a waiter that exhausts its spins and yields keeps
/// yielding until the condition holds or the timeout elapses (lowest
/// latency, full CPU). With `park` and nothing else, a waiter costs no CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WaitPolicy {
    /// Busy-wait iterations (each a `spin_loop` hint) before yielding.
    pub spins: u32,
    /// `sched_yield` calls before parking.
    pub yields: u32,
    /// Whether to sleep in the kernel once spins and yields are used up.
    pub park: bool,
}

impl WaitPolicy {
    /// Pure spinning: lowest wake latency, burns a core while waiting.
    pub const SPIN: WaitPolicy = WaitPolicy { spins: u32::MAX, yields: 0, park: false };
    /// Park at once: zero CPU while waiting, a futex wake per notify.
    pub const PARK: WaitPolicy = WaitPolicy { spins: 0, yields: 0, park: true };
    /// A short spin (a few microseconds), a few yields, then park.
    pub const BALANCED: WaitPolicy = WaitPolicy { spins: 200, yields: 4, park: true };
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy::BALANCED
    }
}
