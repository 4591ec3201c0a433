//! A cheap wall clock for record timestamps.
//!
//! `SystemTime::now()` costs 30–100 ns here (a vDSO call with a fenced
//! `rdtsc` and a seqlock), which is as much as the rest of an append. A
//! producer instead extrapolates from an anchor (a real clock reading and
//! the time-stamp counter read next to it) with one unfenced `rdtsc`, and
//! re-anchors on the real clock every [`ANCHOR_NS`], which also
//! re-measures the counter's rate. Timestamps stay within a few hundred
//! nanoseconds of `CLOCK_REALTIME` and never go backwards for one producer.
//! Off x86-64 every call reads the real clock.
//!
//! Even so a timestamp is not free: on the Intel Xeon VM of the benchmarks,
//! `rdtsc` waits for the thread's earlier loads, stores and prefetches to
//! complete, much as a fence does, so cache misses that would overlap the
//! next append are paid in full. Single appends there cost about 14 ns
//! more with timestamps than without (a producer alone: 36.5 against 62.9
//! M appends/s); `append_batch` takes one timestamp per batch, and queues
//! that need no timestamps turn them off (`OpenOptions::timestamps`).

use crate::segment::now_ns;

/// How long an anchor is used before the real clock is read again.
const ANCHOR_NS: u64 = 1_000_000;

/// The shortest anchor interval from which the counter's rate is measured.
const CALIBRATE_NS: u64 = 200_000;

/// Per-producer clock state (not shared: a producer is used by one thread).
#[derive(Debug, Default)]
pub(crate) struct Clock {
    anchor_tsc: u64,
    anchor_ns: u64,
    /// Nanoseconds per counter tick, as a 32.32 fixed-point number (0:
    /// not yet measured).
    mult: u64,
    /// Counter ticks after the anchor at which to re-anchor.
    window: u64,
    /// The last timestamp handed out (timestamps never go backwards).
    last: u64,
}

impl Clock {
    /// Nanoseconds since the Unix epoch.
    #[inline]
    pub(crate) fn now(&mut self) -> u64 {
        let ns = match tsc() {
            Some(t) => {
                let dt = t.wrapping_sub(self.anchor_tsc);
                if self.mult != 0 && dt < self.window {
                    self.anchor_ns + ((dt as u128 * self.mult as u128) >> 32) as u64
                } else {
                    self.anchor()
                }
            }
            None => now_ns(),
        };
        self.last = self.last.max(ns);
        self.last
    }

    /// Reads the real clock, re-measures the counter's rate over the last
    /// anchor interval and starts a new one.
    #[cold]
    fn anchor(&mut self) -> u64 {
        let mut tries = 0;
        let (ns, t) = loop {
            let (Some(before), ns, Some(after)) = (tsc(), now_ns(), tsc()) else { return now_ns() };
            tries += 1;
            // A reading interrupted (preempted) between the counter reads
            // would skew the rate: retry it.
            if after.wrapping_sub(before) < MAX_READ_TICKS || tries >= 3 {
                break (ns, before / 2 + after / 2);
            }
        };
        let (dns, dt) = (ns.wrapping_sub(self.anchor_ns), t.wrapping_sub(self.anchor_tsc));
        let valid = self.anchor_ns != 0 && ns > self.anchor_ns && dt > 0 && dns < 1 << 31;
        if valid && dns < CALIBRATE_NS && self.mult == 0 {
            // Keep the first anchor until the interval is long enough.
            return ns;
        }
        if valid && dns >= CALIBRATE_NS {
            self.mult = (((dns as u128) << 32) / dt as u128).min(u64::MAX as u128) as u64;
            self.window =
                if self.mult == 0 { 0 } else { (((ANCHOR_NS as u128) << 32) / self.mult as u128) as u64 };
        }
        self.anchor_tsc = t;
        self.anchor_ns = ns;
        ns
    }
}

/// Counter ticks a real clock reading may take before it is retried
/// (about 20 µs at 2.5 GHz; a plain reading takes well under 1 µs).
const MAX_READ_TICKS: u64 = 50_000;

#[cfg(target_arch = "x86_64")]
#[inline]
fn tsc() -> Option<u64> {
    // SAFETY: `rdtsc` exists on every x86-64 CPU, reads a counter and has
    // no memory effects.
    Some(unsafe { core::arch::x86_64::_rdtsc() })
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn tsc() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_the_real_clock_and_never_goes_back() {
        let mut c = Clock::default();
        let mut last = 0;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(30) {
            let real = now_ns();
            let t = c.now();
            let after = now_ns();
            assert!(t >= last);
            // Generous: a preempted thread may sleep between the reads. The
            // clock read is bracketed by two real ones, so a preemption
            // (which only widens the bracket) cannot fail the test, while
            // without one this is the old bound `|t - real| < 5 ms`.
            assert!(t + 5_000_000 > real && t < after + 5_000_000, "clock {t} vs real {real}..{after}");
            if after - real < 100_000 {
                assert!(t.abs_diff(real) < 5_000_000, "clock {t} vs real {real}");
            }
            last = t;
        }
        assert!(c.mult != 0 || tsc().is_none(), "the counter rate was measured");
    }
}
