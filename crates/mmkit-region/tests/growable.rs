//! GrowableFile: growth in place, several threads and processes, full disk,
//! shrink.

mod common;

use std::sync::Arc;

use mmkit_region::{Access, Error, GrowableFile, Mode};

const MIB: u64 = 1 << 20;

#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    match role.as_str() {
        "grow_and_write" => child_grow_and_write(),
        "fsize_limit" => child_fsize_limit(),
        "grow_forever" => child_grow_forever(),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

fn marker(step: u64) -> [u8; 8] {
    step.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()
}

#[test]
fn growing_in_many_steps_keeps_base_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grow");
    let file = GrowableFile::create(&path, 100, 64 * MIB as usize).unwrap();
    let base = file.base();
    let mut len = 100u64;
    let mut starts = Vec::new();
    for step in 0..60u64 {
        starts.push(len - 8);
        file.write_at(len - 8, &marker(step)).unwrap();
        len += 4096 * (step % 7) + 1234;
        file.grow_to(len).unwrap();
        assert_eq!(file.base(), base, "base moved at step {step}");
        assert_eq!(file.len(), len);
    }
    for (step, &at) in starts.iter().enumerate() {
        let mut buf = [0u8; 8];
        file.read_at(at, &mut buf).unwrap();
        assert_eq!(buf, marker(step as u64), "data lost at step {step}");
    }
    file.flush().unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len() as u64, len);
    assert_eq!(&on_disk[starts[10] as usize..][..8], &marker(10));
    // Growth allocates real blocks (fallocate), not a sparse hole.
    let meta = std::fs::metadata(&path).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 >= len);
}

#[test]
fn growing_to_a_smaller_size_is_a_noop_and_past_the_reserve_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = GrowableFile::create(dir.path().join("g"), 8192, 1 << 16).unwrap();
    file.grow_to(10).unwrap();
    assert_eq!(file.len(), 8192);
    let err = file.grow_to(1 << 17).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("reserve"), "{err}");
    let err = GrowableFile::create(dir.path().join("h"), 1 << 20, 4096).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = file.ensure_len(1 << 20).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
}

#[test]
fn threads_grow_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(GrowableFile::create(dir.path().join("t"), 0, 32 * MIB as usize).unwrap());
    assert!(file.is_empty());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let file = Arc::clone(&file);
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let end = (i * 4 + t + 1) * 16_384;
                    file.grow_to(end).unwrap();
                    file.write_at(end - 8, &end.to_le_bytes()).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(file.len(), 200 * 16_384);
    for k in 1..=200u64 {
        let end = k * 16_384;
        let mut buf = [0u8; 8];
        file.read_at(end - 8, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), end);
    }
}

fn child_grow_and_write() {
    let path = common::env("GROW_PATH");
    let file = GrowableFile::open(&path, Mode::ReadWrite, 64 * MIB as usize).unwrap();
    assert_eq!(file.len(), 4096);
    file.grow_to(3 * MIB).unwrap();
    file.write_at(3 * MIB - 5, b"child").unwrap();
    file.write_at(0, b"head!").unwrap();
}

#[test]
fn a_second_process_grows_and_the_first_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared");
    let file = GrowableFile::create(&path, 4096, 64 * MIB as usize).unwrap();
    let reader = GrowableFile::open(&path, Mode::ReadOnly, 64 * MIB as usize).unwrap();
    let base = file.base();

    let out = common::run_child("grow_and_write", &[("GROW_PATH", path.display().to_string())]);
    common::assert_child_ok(&out);

    // Nothing changed locally until we ask: no syscalls on the fast path.
    assert_eq!(file.len(), 4096);
    let mut head = [0u8; 5];
    file.read_at(0, &mut head).unwrap();
    assert_eq!(&head, b"head!", "the first page is shared");
    assert!(matches!(file.read_at(3 * MIB - 5, &mut [0u8; 5]), Err(Error::OutOfBounds { .. })));

    file.ensure_len(3 * MIB).unwrap();
    assert_eq!(file.len(), 3 * MIB);
    assert_eq!(file.base(), base);
    let mut tail = [0u8; 5];
    file.read_at(3 * MIB - 5, &mut tail).unwrap();
    assert_eq!(&tail, b"child");

    assert_eq!(reader.refresh().unwrap(), 3 * MIB);
    reader.read_at(3 * MIB - 5, &mut tail).unwrap();
    assert_eq!(&tail, b"child");
    let err = reader.ensure_len(4 * MIB).unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { size, .. } if size == 3 * MIB), "{err}");
    assert!(matches!(reader.grow_to(4 * MIB), Err(Error::ReadOnly { .. })));
    assert!(matches!(reader.write_at(0, b"x"), Err(Error::ReadOnly { .. })));
}

fn child_fsize_limit() {
    // SAFETY: setting SIGXFSZ to SIG_IGN in a single-purpose child, so an
    // over-limit write fails with EFBIG instead of killing us.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let limit = rustix::process::Rlimit {
        current: Some(MIB),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Fsize).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).unwrap();
    let path = common::env("GROW_PATH");
    let file = GrowableFile::create(&path, 4096, 64 * MIB as usize).unwrap();
    let err = file.grow_to(2 * MIB).unwrap_err();
    assert!(matches!(err, Error::NoSpace { len, .. } if len == 2 * MIB), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&path) && msg.contains("2097152"), "{msg}");
    // The failed grow changed nothing; smaller growth and writes still work.
    assert_eq!(file.len(), 4096);
    file.grow_to(MIB / 2).unwrap();
    file.write_at(MIB / 2 - 3, b"end").unwrap();
    println!("fsize-child-ok");
}

#[test]
fn a_full_disk_is_an_error_at_grow_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full");
    let out = common::run_child("fsize_limit", &[("GROW_PATH", path.display().to_string())]);
    common::assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("fsize-child-ok"));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MIB / 2);
}

#[test]
fn shrink_remaps_and_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrink");
    let mut file = GrowableFile::create(&path, MIB, 16 * MIB as usize).unwrap();
    let base = file.base();
    file.fill_at(0, MIB as usize, 0xAB).unwrap();
    file.shrink_to(5000).unwrap();
    assert_eq!(file.len(), 5000);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 5000);
    assert!(matches!(file.read_at(5000, &mut [0u8; 1]), Err(Error::OutOfBounds { .. })));
    let mut last = [0u8; 1];
    file.read_at(4999, &mut last).unwrap();
    assert_eq!(last[0], 0xAB);

    file.grow_to(2 * MIB).unwrap();
    assert_eq!(file.base(), base);
    let mut buf = vec![0u8; 8192];
    file.read_at(4096, &mut buf).unwrap();
    assert!(buf[..904].iter().all(|&b| b == 0xAB));
    assert!(buf[904..].iter().all(|&b| b == 0), "regrown bytes read as zeros");
    assert!(!file.is_poisoned());
}

#[test]
fn refresh_follows_a_shrink_by_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut writer = GrowableFile::create(&path, 4 * MIB, 16 * MIB as usize).unwrap();
    let reader = GrowableFile::open(&path, Mode::ReadOnly, 16 * MIB as usize).unwrap();
    assert_eq!(reader.len(), 4 * MIB);
    writer.shrink_to(MIB).unwrap();
    assert_eq!(reader.refresh().unwrap(), MIB);
    assert!(matches!(reader.read_at(2 * MIB, &mut [0u8; 1]), Err(Error::OutOfBounds { .. })));
    writer.grow_to(3 * MIB).unwrap();
    writer.write_at(3 * MIB - 1, b"z").unwrap();
    reader.ensure_len(3 * MIB).unwrap();
    let mut z = [0u8; 1];
    reader.read_at(3 * MIB - 1, &mut z).unwrap();
    assert_eq!(&z, b"z");
}

#[test]
fn shrink_judges_by_the_file_not_by_a_stale_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale");
    let mut a = GrowableFile::create(&path, MIB, 16 * MIB as usize).unwrap();
    let mut b = GrowableFile::open(&path, Mode::ReadWrite, 16 * MIB as usize).unwrap();
    // `b` grows the file; `a` still thinks it is 1 MiB long.
    b.grow_to(4 * MIB).unwrap();
    a.shrink_to(2 * MIB).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * MIB, "the length `b` added is cut");
    assert_eq!(a.len(), MIB);
    // `b` cuts the file below what `a` maps; shrinking `a` to a length
    // between the two must not extend the file again.
    b.shrink_to(4096).unwrap();
    a.shrink_to(8192).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    assert_eq!(a.len(), 4096, "`a` no longer claims bytes past the end of the file");
    assert!(matches!(a.read_at(4096, &mut [0u8; 1]), Err(Error::OutOfBounds { .. })));
    assert!(!a.is_poisoned());
}

#[test]
fn copy_on_write_growable_keeps_changes_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cow");
    std::fs::write(&path, vec![7u8; 10_000]).unwrap();
    let cow = GrowableFile::open(&path, Mode::CopyOnWrite, MIB as usize).unwrap();
    assert_eq!(cow.len(), 10_000);
    cow.write_at(0, b"private").unwrap();
    assert!(matches!(cow.grow_to(20_000), Err(Error::ReadOnly { .. })));
    assert_eq!(std::fs::read(&path).unwrap()[..7], [7u8; 7]);
}

#[test]
fn create_new_refuses_an_existing_file_and_open_checks_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, vec![1u8; 100_000]).unwrap();
    let err = GrowableFile::create_new(&path, 10, 1 << 20).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::AlreadyExists), "{err}");
    let err = GrowableFile::open(&path, Mode::ReadWrite, 4096).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let file = GrowableFile::open(&path, Mode::ReadWrite, 1 << 20).unwrap();
    assert_eq!(file.len(), 100_000);
    assert!(file.reserved() >= 1 << 20);
    file.advise(mmkit_region::Advice::Sequential).unwrap();
    file.flush_range(99_000, 1000).unwrap();
    file.flush_async().unwrap();
    assert!(matches!(file.flush_range(99_000, 1001), Err(Error::OutOfBounds { .. })));
}

const BLOCK: u64 = 4096;

fn child_grow_forever() {
    let path = common::env("GROW_PATH");
    let file = GrowableFile::open(&path, Mode::ReadWrite, 256 * MIB as usize).unwrap();
    for i in 0..(256 * MIB / BLOCK) {
        file.grow_to((i + 1) * BLOCK).unwrap();
        file.write_at(i * BLOCK, &marker(i)).unwrap();
        if i == 20 {
            println!("growing-started");
        }
    }
}

#[test]
fn sigkill_while_growing_loses_nothing_written() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed");
    drop(GrowableFile::create(&path, 0, BLOCK as usize).unwrap());
    let mut child = common::child_command("grow_forever")
        .env("GROW_PATH", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "growing-started" {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    std::thread::sleep(std::time::Duration::from_millis(15));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    // The child must still have been growing: a child that failed or
    // finished early would leave nothing to prove.
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status:?}");
    drop(stdout);

    let file = GrowableFile::open(&path, Mode::ReadOnly, 256 * MIB as usize).unwrap();
    let blocks = file.len() / BLOCK;
    assert_eq!(file.len() % BLOCK, 0, "growth is all or nothing");
    assert!(blocks > 20);
    for i in 0..blocks {
        let mut buf = [0u8; 8];
        file.read_at(i * BLOCK, &mut buf).unwrap();
        // The last block may have been grown but not yet written.
        let ok = buf == marker(i) || (i == blocks - 1 && buf == [0u8; 8]);
        assert!(ok, "block {i} of {blocks} lost its data");
    }
}

/// Minor page faults of the calling thread so far.
fn minor_faults() -> i64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given, nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
    usage.ru_minflt
}

/// `populate_range` maps a range's pages in one call: writing to every
/// page of it afterwards takes no page fault, and what was there stays.
/// In shared memory (no write-back that would write-protect pages again).
#[test]
fn populate_range_maps_the_pages_and_keeps_their_contents() {
    let path = std::path::PathBuf::from(format!("/dev/shm/mmkit-populate-{}", std::process::id()));
    let file = GrowableFile::create(&path, 8 * MIB, 64 * MIB as usize).unwrap();
    file.write_at(3 * 4096, b"kept").unwrap();
    file.populate_range(4096, 4 * MIB).unwrap();
    let before = minor_faults();
    for page in 1..=1024u64 {
        file.write_at(page * 4096 + 100, &[1]).unwrap();
    }
    assert_eq!(minor_faults() - before, 0, "pages left to fault in");
    let mut kept = [0u8; 4];
    file.read_at(3 * 4096, &mut kept).unwrap();
    assert_eq!(&kept, b"kept");
    // Past the mapped file: an error, as for any access.
    assert!(matches!(file.populate_range(8 * MIB - 10, 100), Err(Error::OutOfBounds { .. })));
    // Read-only: populated readable, nothing written.
    let ro = GrowableFile::open(&path, Mode::ReadOnly, 64 * MIB as usize).unwrap();
    ro.populate_range(0, 8 * MIB).unwrap();
    ro.read_at(3 * 4096, &mut kept).unwrap();
    assert_eq!(&kept, b"kept");
    std::fs::remove_file(&path).unwrap();
}
