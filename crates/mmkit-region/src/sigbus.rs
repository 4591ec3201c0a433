//! Turning a SIGBUS in a registered mapping into [`Error::Poisoned`](crate::Error::Poisoned).
//!
//! # Why
//!
//! When the file behind a `MAP_SHARED` mapping is truncated by another
//! process, touching a page past the new end raises `SIGBUS`, whose default
//! action kills the process. No mmap API in any language turns that into an
//! error. mmkit does what libwayland does: a process-wide `SIGBUS` handler
//! looks up the faulting address in a registry of mappings; when it lies in
//! one, the handler maps anonymous zero pages over the *whole* registered
//! range with `MAP_FIXED`, marks the registration poisoned and returns. The
//! faulting instruction runs again, now reading zeros, and the next checked
//! operation ([`Access::read_at`](crate::Access::read_at) and friends)
//! returns [`Error::Poisoned`](crate::Error::Poisoned).
//!
//! # On by default, for file-backed mappings
//!
//! [`MapOptions::sigbus_guard`](crate::MapOptions::sigbus_guard) defaults to
//! `true`, and [`GrowableFile`](crate::GrowableFile) always registers its
//! whole reserved range. The reasons:
//!
//! - the failure it prevents (a peer truncates a shared file; a sparse file
//!   hits a full disk; a device goes away) is exactly the kind of outside
//!   event a library for *shared* files must survive, and the alternative is
//!   the death of the whole process;
//! - it costs nothing on the access path: registration is a few atomic
//!   stores at map time, the handler runs only when a SIGBUS happens;
//! - it chains: a SIGBUS outside every registered range goes to the handler
//!   that was installed before ours (Rust's std installs one), or to the
//!   default action, so the process still dies as it would have.
//!
//! Anonymous mappings cannot raise SIGBUS this way and are not registered.
//! Turn the guard off per mapping with `sigbus_guard(false)` if the process
//! must own the SIGBUS disposition itself.
//!
//! # Limits
//!
//! - Data is lost, not recovered: after poisoning, the range is private
//!   anonymous memory. Reads see zeros; writes land in that memory and never
//!   reach the file. Only checked operations report [`Error::Poisoned`](crate::Error::Poisoned); raw
//!   pointers and `unsafe` slices simply see zeros.
//! - Any SIGBUS in the range poisons the whole range, even pages still
//!   backed by the file.
//! - The range is replaced once. A SIGBUS reported for an already poisoned
//!   range (another thread that faulted at the same time, its signal
//!   delivered late) changes nothing, so what the process wrote to the
//!   replacement memory since stays there. Code that maps file pages into
//!   a registered range later (as [`GrowableFile`](crate::GrowableFile)
//!   grows) checks for poisoning afterwards and puts zero pages back, so a
//!   poisoned range never holds file pages again.
//! - Another library that installs its own SIGBUS handler after us without
//!   chaining to ours disables the mechanism; one that installs before us is
//!   chained to.
//! - The registry has [`CAPACITY`] slots. Mappings made while it is full are
//!   simply not guarded (the process dies on SIGBUS as without mmkit).
//! - The handler only replaces ranges it registered itself, so `MAP_FIXED`
//!   never clobbers memory that belongs to someone else.
//! - A SIGBUS sent with `kill(2)` (not a memory fault) is always chained;
//!   when the disposition before ours was `SIG_IGN`, it stays ignored. When
//!   it was std's handler, that handler resets SIGBUS to `SIG_DFL` and the
//!   process survives that signal, as without mmkit; ours is then put back,
//!   with `SIG_DFL` as the disposition to chain to, so the guard stays on.
//! - The handler runs on the alternate signal stack when the thread has one
//!   (`SA_ONSTACK`), as std's threads do.

use std::sync::Once;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// Number of mappings that can be registered at once.
pub const CAPACITY: usize = 4096;

/// One registry entry. `len == 0` means free. Writers bump `seq` to an odd
/// value while they change `start`/`len` and back to even afterwards, so
/// the handler can tell a consistent pair from a torn one.
struct Slot {
    seq: AtomicUsize,
    start: AtomicUsize,
    len: AtomicUsize,
    claimed: AtomicBool,
    poisoned: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            claimed: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
        }
    }

    fn publish(&self, start: usize, len: usize) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.start.store(start, Ordering::Release);
        self.len.store(len, Ordering::Release);
        self.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// A consistent `(start, len)` pair, or `None` while being rewritten.
    fn read(&self) -> Option<(usize, usize)> {
        let before = self.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        let start = self.start.load(Ordering::Acquire);
        let len = self.len.load(Ordering::Acquire);
        let after = self.seq.load(Ordering::Acquire);
        (before == after && len != 0).then_some((start, len))
    }
}

static TABLE: [Slot; CAPACITY] = [const { Slot::new() }; CAPACITY];
static NEXT_HINT: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The SIGBUS disposition in force before ours, to chain to.
static PREVIOUS: OnceLock<PrevAction> = OnceLock::new();

/// `libc::sigaction` holds a raw function address; it is plain data.
struct PrevAction(libc::sigaction);
// SAFETY: the struct is plain old data (integers and a signal mask); it is
// written once before our handler is installed and only read afterwards.
unsafe impl Sync for PrevAction {}
// SAFETY: as for `Sync`.
unsafe impl Send for PrevAction {}

/// A registration of one mapping with the SIGBUS handler; dropping it
/// deregisters.
#[derive(Debug)]
pub struct Guard {
    slot: usize,
}

impl Guard {
    /// True once the handler caught a SIGBUS inside the registered range.
    #[inline]
    pub fn is_poisoned(&self) -> bool {
        TABLE[self.slot].poisoned.load(Ordering::SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let slot = &TABLE[self.slot];
        slot.publish(0, 0);
        slot.poisoned.store(false, Ordering::Release);
        slot.claimed.store(false, Ordering::Release);
    }
}

/// Installs the process-wide handler now (it is otherwise installed by the
/// first registration). Returns false if `sigaction` failed.
pub fn install() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: `sigaction` with a valid signal number and pointers to
        // initialised structs; `handler` is async-signal-safe (it touches
        // only atomics and makes raw syscalls).
        let ok = unsafe { install_handler() };
        INSTALLED.store(ok, Ordering::Release);
    });
    INSTALLED.load(Ordering::Acquire)
}

/// Whether the handler is installed in this process.
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Number of registered ranges right now.
pub fn registered() -> usize {
    TABLE.iter().filter(|s| s.claimed.load(Ordering::Acquire)).count()
}

/// Registers `len` bytes at `base`; `None` when the handler could not be
/// installed or the registry is full.
pub(crate) fn register(base: *mut u8, len: usize) -> Option<Guard> {
    if len == 0 || !install() {
        return None;
    }
    // The kernel maps whole pages: cover the tail of the last one too.
    let page = crate::page_size();
    let len = len.checked_add(page - 1)? / page * page;
    let hint = NEXT_HINT.load(Ordering::Relaxed);
    for i in 0..CAPACITY {
        let idx = (hint + i) % CAPACITY;
        let slot = &TABLE[idx];
        if slot.claimed.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            slot.poisoned.store(false, Ordering::Release);
            slot.publish(base as usize, len);
            NEXT_HINT.store(idx + 1, Ordering::Relaxed);
            return Some(Guard { slot: idx });
        }
    }
    None
}

/// # Safety
///
/// Must be called at most once (from `INSTALL`).
unsafe fn install_handler() -> bool {
    // SAFETY: `sigaction` is plain data; all-zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only queries the current disposition into `old`.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
        return false;
    }
    let _ = PREVIOUS.set(PrevAction(old));
    // SAFETY: valid signal and pointers; `handler` has the SA_SIGINFO
    // signature and is async-signal-safe.
    unsafe { libc::sigaction(libc::SIGBUS, &our_action(), std::ptr::null_mut()) == 0 }
}

/// Our disposition: `handler`, with siginfo, on the alternate stack.
fn our_action() -> libc::sigaction {
    // SAFETY: `sigaction` is plain data; all-zero is a valid value (and an
    // empty `sa_mask`).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = our_handler();
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    new
}

fn our_handler() -> libc::sighandler_t {
    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = handler;
    f as libc::sighandler_t
}

/// The SIGBUS handler. Async-signal-safe: atomics and raw syscalls only,
/// no locks, no allocation.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` with SA_SIGINFO.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code <= 0 means the signal was sent by a process, not a fault.
    if code > 0 && poison_range_containing(addr) {
        return;
    }
    // SAFETY: we are in a signal handler for `sig` with the kernel's
    // `info` and `ctx`, exactly what the previous handler expects.
    unsafe { chain(sig, info, ctx) };
}

/// Finds the registered range holding `addr`, replaces it with zero pages
/// and marks it poisoned. Returns false if no range holds `addr` or the
/// replacement failed.
///
/// A range is replaced once only. Several threads can fault in it at
/// about the same time; the handlers of the later ones may run after the
/// first thread has already retried its access and written to the
/// replacement memory, and replacing it again would wipe those writes (a
/// lock's owner word, say). So the first handler claims the range by
/// setting `poisoned` *before* it remaps, and every later one just
/// returns: its retried access either succeeds or, while the first
/// handler is still remapping, faults again and comes back here.
fn poison_range_containing(addr: usize) -> bool {
    for slot in TABLE.iter() {
        let Some((start, len)) = slot.read() else { continue };
        if addr < start || addr - start >= len {
            continue;
        }
        if slot.poisoned.swap(true, Ordering::SeqCst) {
            return true;
        }
        // SAFETY: `start..start+len` is a mapping this crate registered and
        // still owns (guards deregister before unmapping, and the faulting
        // access proves the owner is alive). Replacing it with fresh
        // anonymous memory at the same address is what makes the retried
        // access succeed. `mmap_anonymous` is a raw syscall, signal-safe.
        let mapped = unsafe { replace_with_zeros(start, len) };
        if mapped.is_err() {
            // Let a later fault try again rather than spin on a range
            // that was never replaced.
            slot.poisoned.store(false, Ordering::SeqCst);
            return false;
        }
        return true;
    }
    false
}

/// Maps private anonymous zero pages over `len` bytes at `start`.
///
/// # Safety
///
/// `start..start+len` must be memory this crate owns: `MAP_FIXED`
/// replaces whatever is there. Async-signal-safe (one raw syscall).
pub(crate) unsafe fn replace_with_zeros(start: usize, len: usize) -> rustix::io::Result<()> {
    // SAFETY: the caller guarantees the range is ours to replace.
    unsafe {
        rustix::mm::mmap_anonymous(
            start as *mut libc::c_void,
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED | rustix::mm::MapFlags::NORESERVE,
        )
    }
    .map(|_| ())
}

/// Hands the signal to the disposition that was in force before ours.
///
/// # Safety
///
/// Only from within the SIGBUS handler, with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let (prev, flags) = match REPLACED_BY.load(Ordering::Acquire) {
        0 => (
            PREVIOUS.get().map(|p| p.0.sa_sigaction).unwrap_or(libc::SIG_DFL),
            PREVIOUS.get().map(|p| p.0.sa_flags).unwrap_or(0),
        ),
        // The previous handler replaced itself (see `keep_installed`).
        replaced => (replaced - 1, REPLACED_FLAGS.load(Ordering::Acquire)),
    };
    // SAFETY: the kernel passes a valid `siginfo_t` with SA_SIGINFO.
    let sent = unsafe { (*info).si_code } <= 0;
    if prev == libc::SIG_IGN && sent {
        // An ignored SIGBUS sent with kill(2) stays ignored, as without
        // mmkit. (A fault cannot be ignored: the kernel kills the process
        // anyway, which the branch below reproduces.)
        return;
    }
    if prev == libc::SIG_DFL || prev == libc::SIG_IGN {
        // Restore the default and re-raise, so the process dies with
        // SIGBUS exactly as without mmkit. Re-raising matters for a SIGBUS
        // sent with kill(2): unlike a fault, it would not recur on return.
        // SAFETY: zeroed `sigaction` with SIG_DFL (0) is valid; `sigaction`
        // and `raise` are async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            libc::raise(sig);
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the previous handler has this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(prev) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the previous handler takes the signal
        // number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev) };
        f(sig);
    }
    if sent {
        // SAFETY: called from the SIGBUS handler, as `keep_installed` needs.
        unsafe { keep_installed(sig) };
    }
}

/// The disposition that replaced ours when the previous handler reset
/// itself, plus one (0: none); its `sa_flags` in `REPLACED_FLAGS`.
static REPLACED_BY: AtomicUsize = AtomicUsize::new(0);
static REPLACED_FLAGS: AtomicI32 = AtomicI32::new(0);

/// Reinstalls our handler if the handler we chained to replaced it, and
/// chains to the replacement from then on.
///
/// Why: Rust's runtime handler (the usual previous one) treats a SIGBUS
/// that is not a stack overflow by resetting SIGBUS to the default and
/// returning, so that a fault recurs and kills. For a SIGBUS sent with
/// kill(2), nothing recurs: the process lives on, as without mmkit, but
/// without this our handler would be gone and the next truncated-file
/// fault would kill the process. Only for sent signals: after a fault the
/// replacement must stay, or the retried access would loop through the
/// handlers for ever.
///
/// # Safety
///
/// Only from within the SIGBUS handler.
unsafe fn keep_installed(sig: libc::c_int) {
    // SAFETY: `sigaction` is plain data; all-zero is a valid value.
    let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only queries the disposition; `sigaction` is
    // async-signal-safe.
    if unsafe { libc::sigaction(sig, std::ptr::null(), &mut now) } != 0 {
        return;
    }
    if now.sa_sigaction == our_handler() {
        return;
    }
    REPLACED_FLAGS.store(now.sa_flags, Ordering::Release);
    REPLACED_BY.store(now.sa_sigaction.wrapping_add(1), Ordering::Release);
    // SAFETY: valid signal and pointers; `handler` has the SA_SIGINFO
    // signature and is async-signal-safe.
    unsafe { libc::sigaction(sig, &our_action(), std::ptr::null_mut()) };
}
