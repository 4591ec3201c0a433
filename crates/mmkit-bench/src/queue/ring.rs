//! The ceiling: a raw single-producer ring over a MAP_SHARED file in
//! /dev/shm, 64-byte slots, head and tails on separate cache lines. It has
//! no persistence, no checksums, no crash handling: it is what the hardware
//! gives two processes. The parking variant spins, then sleeps on a futex
//! over the head word; the producer then pays a SeqCst fence per message to
//! see sleepers (the same price any spin-then-park queue pays).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use memmap2::MmapMut;
use rustix::thread::futex;

use super::proto::{MSG, Msg, Receiver, Sender};

/// Slots in the ring (a power of two).
const CAP: u32 = 1 << 14;
const HEAD: usize = 0;
const SLEEPERS: usize = 128;
const TAILS: usize = 256;
/// At most this many independent readers.
pub const MAX_READERS: usize = 8;
const SLOTS: usize = 4096;
/// Empty polls before a parking reader sleeps.
const SPINS: u32 = 2000;

/// Bytes the ring file needs.
pub fn file_len() -> u64 {
    (SLOTS + CAP as usize * MSG) as u64
}

/// Creates the zeroed ring file.
pub fn create(path: &Path) -> io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(file_len())
}

/// One process's view of the ring.
struct Ring {
    map: MmapMut,
}

impl Ring {
    fn open(path: &Path) -> io::Result<Ring> {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        if f.metadata()?.len() < file_len() {
            return Err(io::Error::other("ring file too short"));
        }
        // SAFETY: the file is a bench-private /dev/shm file; every access to
        // the shared part goes through atomics or is ordered by them.
        let map = unsafe { MmapMut::map_mut(&f)? };
        Ok(Ring { map })
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= SLOTS && offset % 4 == 0);
        // SAFETY: in bounds and 4-aligned (checked above; the map is page
        // aligned); AtomicU32 has the layout of u32 and tolerates concurrent
        // access from the other process.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU32) }
    }

    fn head(&self) -> &AtomicU32 {
        self.word(HEAD)
    }

    fn tail(&self, reader: usize) -> &AtomicU32 {
        self.word(TAILS + 128 * reader)
    }

    fn slot(&self, index: u32) -> *mut u8 {
        let at = SLOTS + (index % CAP) as usize * MSG;
        // SAFETY: `at + MSG <= file_len() <= map.len()` since index % CAP < CAP.
        unsafe { self.map.as_ptr().add(at) as *mut u8 }
    }
}

/// The ring's producer.
pub struct RingSender {
    ring: Ring,
    head: u32,
    min_tail: u32,
    readers: usize,
    park: bool,
}

impl RingSender {
    /// Opens the ring at `path` for `readers` readers; `park` wakes sleepers.
    pub fn open(path: &Path, readers: usize, park: bool) -> io::Result<Self> {
        let ring = Ring::open(path)?;
        let head = ring.head().load(Ordering::Acquire);
        Ok(RingSender { ring, head, min_tail: head, readers: readers.clamp(1, MAX_READERS), park })
    }

    fn refresh_min_tail(&mut self) {
        let head = self.head;
        self.min_tail = (0..self.readers)
            .map(|r| self.ring.tail(r).load(Ordering::Acquire))
            .max_by_key(|t| head.wrapping_sub(*t))
            .unwrap_or(head);
    }
}

impl Sender for RingSender {
    fn send(&mut self, m: &Msg) -> io::Result<()> {
        let mut spins = 0u32;
        while self.head.wrapping_sub(self.min_tail) >= CAP {
            self.refresh_min_tail();
            spins += 1;
            if spins > 1000 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: the slot is in bounds; every reader's tail has passed it
        // (acquire above), so no reader reads it until the release below.
        unsafe { std::ptr::copy_nonoverlapping(m.as_ptr(), self.ring.slot(self.head), MSG) };
        self.head = self.head.wrapping_add(1);
        self.ring.head().store(self.head, Ordering::Release);
        if self.park {
            fence(Ordering::SeqCst);
            if self.ring.word(SLEEPERS).load(Ordering::Relaxed) != 0 {
                futex::wake(self.ring.head(), futex::Flags::empty(), u32::MAX)?;
            }
        }
        Ok(())
    }
}

/// One of the ring's readers.
pub struct RingReceiver {
    ring: Ring,
    reader: usize,
    tail: u32,
    head: u32,
    park: bool,
}

impl RingReceiver {
    /// Opens reader number `reader` of the ring at `path`.
    pub fn open(path: &Path, reader: usize, park: bool) -> io::Result<Self> {
        let ring = Ring::open(path)?;
        let reader = reader.min(MAX_READERS - 1);
        let tail = ring.tail(reader).load(Ordering::Acquire);
        Ok(RingReceiver { ring, reader, tail, head: tail, park })
    }

    fn wait(&mut self) -> io::Result<()> {
        let mut spins = 0u32;
        loop {
            self.head = self.ring.head().load(Ordering::Acquire);
            if self.head != self.tail {
                return Ok(());
            }
            spins += 1;
            if !self.park || spins < SPINS {
                std::hint::spin_loop();
                continue;
            }
            self.sleep()?;
        }
    }

    fn sleep(&mut self) -> io::Result<()> {
        let sleepers = self.ring.word(SLEEPERS);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let seen = self.ring.head().load(Ordering::SeqCst);
        let result = if seen == self.tail {
            futex::wait(self.ring.head(), futex::Flags::empty(), seen, None)
        } else {
            Ok(())
        };
        sleepers.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(()) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Receiver for RingReceiver {
    fn recv(&mut self, out: &mut Msg) -> io::Result<()> {
        if self.head == self.tail {
            self.wait()?;
        }
        // SAFETY: the slot is in bounds and was published by the producer's
        // release store of head, which we acquired; the producer does not
        // reuse it until our tail passes it.
        unsafe { std::ptr::copy_nonoverlapping(self.ring.slot(self.tail), out.as_mut_ptr(), MSG) };
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail(self.reader).store(self.tail, Ordering::Release);
        Ok(())
    }
}
