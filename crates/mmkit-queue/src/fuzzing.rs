//! Entry points shared by the `cargo fuzz` targets and the tests. Not a
//! stable API.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{Error, Queue, Start};

/// Segment size of the template queue: small, so it has several segments.
const SEGMENT: u64 = 64 << 10;

/// A queue directory's files: (file name, bytes).
type Files = Vec<(String, Vec<u8>)>;

/// The files of a queue with several sealed segments, an active one, a
/// named cursor and messages with metadata. Built once per process.
fn template() -> Option<&'static Files> {
    static FILES: OnceLock<Option<Files>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            let dir = scratch_dir().ok()?;
            let path = dir.join("q");
            let built = build(&path);
            let files = built.ok().and_then(|()| read_dir_files(&path));
            let _ = std::fs::remove_dir_all(&dir);
            files
        })
        .as_ref()
}

fn build(path: &Path) -> crate::Result<()> {
    let q = Queue::options().create(true).segment_size(SEGMENT).open(path)?;
    let mut p = q.producer()?;
    for i in 0u32..3000 {
        let body = vec![i as u8; 10 + (i as usize * 7) % 90];
        if i % 5 == 0 {
            p.append_batch_with_meta(&[(&body, b"meta"), (b"second", b"")])?;
        } else {
            p.append(&body)?;
        }
    }
    let mut c = q.cursor("c")?;
    for _ in 0..100 {
        if c.next()?.is_none() {
            break;
        }
    }
    c.commit()?;
    Ok(())
}

fn read_dir_files(path: &Path) -> Option<Files> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name().into_string().ok()?;
        // A segment the producer pre-creates in the background is a
        // hidden temporary file until it is renamed, and may vanish
        // between the listing and the read: not part of the queue.
        if name.starts_with('.') {
            continue;
        }
        match std::fs::read(entry.path()) {
            Ok(bytes) => files.push((name, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    files.sort();
    Some(files)
}

fn scratch_dir() -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mmkit-queue-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A hostile or buggy peer: overwrites bytes of a built queue's files
/// (`data` is pairs of a 4-byte selector, which picks the file and the
/// position, and up to 8 bytes), then reads everything without blocking,
/// skipping what is corrupt, checks, repairs and appends. Errors are fine;
/// panics, hangs and out-of-bounds accesses are not.
pub fn queue_image(data: &[u8]) {
    let Some(files) = template() else { return };
    let Ok(dir) = scratch_dir() else { return };
    let path = dir.join("q");
    let mut images: Files = files.clone();
    let mut rest = data;
    while rest.len() >= 4 && !images.is_empty() {
        let sel = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let n = (rest.len() - 4).min(8);
        let file = &mut images[sel % files.len()].1;
        // Headers and first frames most often: where the structure is.
        let span = if sel & (1 << 31) == 0 { file.len().min(512) } else { file.len() };
        let at = (sel >> 8) % span.max(1);
        for (k, b) in rest[4..4 + n].iter().enumerate() {
            if let Some(x) = file.get_mut(at + k) {
                *x = *b;
            }
        }
        rest = &rest[4 + n..];
    }
    if std::fs::create_dir_all(&path).is_ok()
        && images.iter().all(|(name, bytes)| std::fs::write(path.join(name), bytes).is_ok())
    {
        exercise(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every non-blocking path on a possibly corrupt queue.
fn exercise(path: &Path) {
    let Ok(q) = Queue::open(path) else { return };
    let _ = q.stat();
    let _ = q.cursors();
    let _ = q.end_index();
    read_all(&q, false);
    read_all(&q, true);
    let _ = q.check();
    let _ = q.repair();
    if let Ok(mut p) = q.producer() {
        let _ = p.append(b"after");
        let _ = p.append_batch(&[b"one", b"two"]);
    }
    if let Ok(mut c) = q.cursor("c") {
        let _ = c.next();
        let _ = c.commit();
    }
    read_all(&q, false);
}

/// Reads from the beginning until the reader says there is nothing more,
/// skipping corrupt records; bounded, since a reader that keeps returning
/// records on a garbage queue is not a bug.
fn read_all(q: &Queue, skip_corrupt: bool) {
    let Ok(mut r) = q.reader(Start::Beginning) else { return };
    r.set_skip_corrupt(skip_corrupt);
    for _ in 0..20_000 {
        match r.next() {
            Ok(Some(rec)) => {
                let _ = rec.index();
            }
            Ok(None) => return,
            Err(Error::CorruptRecord { .. }) => {
                if r.skip().is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// What a producer does at a rollover before it creates the next segment:
/// seals segment 0 of the queue at `path` where its claims end (the end
/// frame, then the final count) and moves `active` on to segment 1.
/// Tests call it to leave the state of a producer killed right there.
pub fn seal_first_segment_and_move_on(path: &Path) -> crate::Result<()> {
    use crate::format::{KIND_EOS, META_ACTIVE, SEG_FINAL_COUNT, SEG_TAIL, split_tail, state_word};
    use mmkit_region::{Access, MapOptions, Mode};
    use std::sync::atomic::Ordering;
    let map =
        |p: &Path| MapOptions::new().mode(Mode::ReadWrite).map_path(p).map_err(crate::Error::region("map"));
    let seg = map(&path.join(crate::segment::segment_file_name(0)))?;
    fn word(m: &mmkit_region::Mapping, at: u64) -> crate::Result<&std::sync::atomic::AtomicU64> {
        m.atomic_u64(at).map_err(crate::Error::region("forge a word"))
    }
    let (count, end) = split_tail(word(&seg, SEG_TAIL)?.load(Ordering::SeqCst));
    word(&seg, end)?.store(state_word(KIND_EOS, 0, 0), Ordering::SeqCst);
    word(&seg, SEG_FINAL_COUNT)?.store(count, Ordering::SeqCst);
    word(&map(&path.join("meta"))?, META_ACTIVE)?.store(1, Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The entry point on random inputs, so every test run exercises it.
    #[test]
    fn queue_image_survives_random_inputs() {
        assert!(super::template().is_some_and(|f| f.len() >= 3), "the template builds");
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        super::queue_image(&[]);
        for _ in 0..40 {
            let len = (next() % 150) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            super::queue_image(&data);
        }
    }
}
