//! Crash injection for the tests: with the `crash-points` feature and
//! `MMKIT_HEAP_CRASH=<point>:<n>` in the environment, the process SIGKILLs
//! itself the n-th time it passes `point` (`*` matches every point). Off
//! (and free) in normal builds.

#[cfg(feature = "crash-points")]
mod imp {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);

    fn target() -> &'static Option<(String, u64)> {
        TARGET.get_or_init(|| {
            let spec = std::env::var("MMKIT_HEAP_CRASH").ok()?;
            let (name, n) = spec.rsplit_once(':')?;
            Some((name.to_string(), n.parse().ok()?))
        })
    }

    pub fn point(name: &str) {
        let Some((want, n)) = target() else { return };
        if want != "*" && want != name {
            return;
        }
        if PASSES.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
            std::process::abort();
        }
    }
}

/// Marks a step of a multi-step operation where a test may kill us.
#[inline(always)]
pub(crate) fn point(_name: &str) {
    #[cfg(feature = "crash-points")]
    imp::point(_name);
}
