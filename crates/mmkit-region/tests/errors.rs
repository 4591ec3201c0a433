//! Every bad input gets a clear error naming the operation and the path;
//! none panics.

mod common;

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;

use mmkit_region::shm::Shm;
use mmkit_region::{Access, Error, GrowableFile, MapOptions, Mapping, Mode, Share};

/// Exit code of the unprivileged child when it cannot drop privileges.
const SKIP: i32 = 77;

#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    match role.as_str() {
        "unprivileged" => child_unprivileged(),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

fn file_with(dir: &std::path::Path, name: &str, len: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![1u8; len]).unwrap();
    path
}

#[test]
fn offset_or_length_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_with(dir.path(), "f", 10_000);
    let err = MapOptions::new().offset(10_001).map_path(&path).unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { offset: 10_001, size: 10_000, .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    let err = MapOptions::new().offset(5000).len(5001).map_path(&path).unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err}");
    let err = MapOptions::new().offset(u64::MAX).len(2).map_path(&path).unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err}");

    let map = MapOptions::new().offset(5000).map_path(&path).unwrap();
    assert_eq!(map.len(), 5000);
    let mut buf = [0u8; 2];
    assert!(matches!(map.read_at(4999, &mut buf), Err(Error::OutOfBounds { .. })));
    assert!(matches!(map.read_at(u64::MAX, &mut buf), Err(Error::OutOfBounds { .. })));
    assert!(matches!(
        map.load_u64(4996, std::sync::atomic::Ordering::Relaxed),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(map.flush_range(4000, 1001), Err(Error::OutOfBounds { .. })));
    assert!(map.advise_range(mmkit_region::Advice::Random, 0, 5001).is_err());
}

#[test]
fn misaligned_atomics() {
    let map = Mapping::anonymous(4096, Share::Private).unwrap();
    let err = map.atomic_u64(4).unwrap_err();
    assert!(matches!(err, Error::Misaligned { offset: 4, align: 8, .. }), "{err}");
    assert!(matches!(map.atomic_u32(2), Err(Error::Misaligned { .. })));
    assert!(map.atomic_u32(4).is_ok());
}

#[test]
fn zero_length() {
    let dir = tempfile::tempdir().unwrap();
    let empty = file_with(dir.path(), "empty", 0);
    let err = MapOptions::new().map_path(&empty).unwrap_err();
    assert!(matches!(err, Error::ZeroLength { .. }), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
    let full = file_with(dir.path(), "full", 100);
    assert!(matches!(MapOptions::new().len(0).map_path(&full), Err(Error::ZeroLength { .. })));
    assert!(matches!(MapOptions::new().offset(100).map_path(&full), Err(Error::ZeroLength { .. })));
    assert!(matches!(Mapping::anonymous(0, Share::Shared), Err(Error::ZeroLength { .. })));
    assert!(matches!(GrowableFile::create(dir.path().join("g"), 0, 0), Err(Error::ZeroLength { .. })));
}

#[test]
fn a_directory() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [Mode::ReadOnly, Mode::ReadWrite, Mode::CopyOnWrite] {
        let err = MapOptions::new().mode(mode).map_path(dir.path()).unwrap_err();
        assert!(matches!(err, Error::IsDirectory { .. }), "{mode:?}: {err}");
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
    let err = GrowableFile::open(dir.path(), Mode::ReadOnly, 1 << 20).unwrap_err();
    assert!(matches!(err, Error::IsDirectory { .. }), "{err}");
    let err = GrowableFile::create(dir.path(), 10, 1 << 20).unwrap_err();
    assert!(matches!(err, Error::IsDirectory { .. }), "{err}");
}

#[test]
fn missing_files_and_shm_names() {
    let err = MapOptions::new().map_path("/nonexistent/mmkit/file").unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::NotFound));
    assert!(err.to_string().contains("/nonexistent/mmkit/file"), "{err}");
    let name = common::unique_name("missing");
    let err = Shm::open(&name, Mode::ReadOnly).unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::NotFound), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    assert_eq!(Shm::unlink(&name).unwrap_err().io_kind(), Some(ErrorKind::NotFound));
    assert_eq!(Shm::info(&name).unwrap_err().io_kind(), Some(ErrorKind::NotFound));
}

#[test]
fn invalid_shm_names() {
    let long = "n".repeat(256);
    for bad in ["", "/", "a/b", "//a", "/a/", ".", "..", "/..", "a\0b", long.as_str()] {
        for result in [
            Shm::create(bad, 10).map(|_| ()),
            Shm::open(bad, Mode::ReadOnly).map(|_| ()),
            Shm::open_or_create(bad, 10).map(|_| ()),
            Shm::unlink(bad),
            Shm::info(bad).map(|_| ()),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("invalid name"), "{err}");
        }
    }
    let ok = "n".repeat(255);
    assert_eq!(mmkit_region::shm::normalize_name("test", &format!("/{ok}")).unwrap(), ok);
}

#[test]
fn a_read_only_descriptor_mapped_read_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_with(dir.path(), "ro", 4096);
    let file = std::fs::File::open(&path).unwrap();
    let err = MapOptions::new().mode(Mode::ReadWrite).map_file_at(&file, Some(&path)).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    // Copy-on-write needs only read access.
    let cow = MapOptions::new().mode(Mode::CopyOnWrite).map_file(&file).unwrap();
    cow.write_at(0, b"private").unwrap();
    let ro = MapOptions::new().map_file(&file).unwrap();
    assert!(matches!(ro.write_at(0, b"x"), Err(Error::ReadOnly { .. })));
    assert!(matches!(ro.atomic_u32(0), Err(Error::ReadOnly { .. })));
    assert!(matches!(ro.fill_at(0, 1, 0), Err(Error::ReadOnly { .. })));
}

/// Drops root to `nobody` so permission bits and RLIMIT_MEMLOCK apply.
fn drop_privileges() -> bool {
    if rustix::process::geteuid().is_root() {
        // SAFETY: plain libc calls in a single-purpose child; glibc applies
        // them to every thread of the process.
        let dropped = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0 && libc::setgid(65534) == 0 && libc::setuid(65534) == 0
        };
        if !dropped {
            return false;
        }
    }
    !rustix::process::geteuid().is_root()
}

fn child_unprivileged() {
    if !drop_privileges() {
        eprintln!("note: cannot drop root privileges here");
        std::process::exit(SKIP);
    }
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("note: no writable temporary directory for an unprivileged user");
        std::process::exit(SKIP);
    };
    let locked = file_with(dir.path(), "mode0000", 4096);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let err = MapOptions::new().map_path(&locked).unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::PermissionDenied), "{err}");
    assert!(err.to_string().contains("mode0000"), "{err}");
    assert_eq!(
        GrowableFile::open(&locked, Mode::ReadOnly, 1 << 20).unwrap_err().io_kind(),
        Some(ErrorKind::PermissionDenied)
    );

    let readonly = file_with(dir.path(), "mode0444", 4096);
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o444)).unwrap();
    let err = MapOptions::new().mode(Mode::ReadWrite).map_path(&readonly).unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::PermissionDenied), "{err}");
    assert!(MapOptions::new().mode(Mode::ReadOnly).map_path(&readonly).is_ok());
    assert!(MapOptions::new().mode(Mode::CopyOnWrite).map_path(&readonly).is_ok());

    let limit = 64 * 1024;
    let rlimit = rustix::process::Rlimit { current: Some(limit), maximum: Some(limit) };
    rustix::process::setrlimit(rustix::process::Resource::Memlock, rlimit).unwrap();
    let map = Mapping::anonymous(1 << 20, Share::Private).unwrap();
    let err = map.lock().unwrap_err();
    assert!(
        matches!(err, Error::MemlockLimit { limit: 65536, requested, .. } if requested == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("RLIMIT_MEMLOCK (65536 bytes)"), "{err}");
    let small = Mapping::anonymous(4096, Share::Private).unwrap();
    small.lock().unwrap();
    small.unlock().unwrap();
    println!("unprivileged-ok");
}

#[test]
fn permission_denied_read_only_files_and_memlock_as_an_unprivileged_user() {
    let out = common::run_child("unprivileged", &[]);
    if out.status.code() == Some(SKIP) {
        common::skip(&String::from_utf8_lossy(&out.stderr));
        return;
    }
    common::assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("unprivileged-ok"));
}

#[test]
fn shm_opened_read_only_cannot_map_read_write() {
    let name = common::unique_name("ro");
    let seg = Shm::create(&name, 4096).unwrap();
    let ro = Shm::open(&name, Mode::ReadOnly).unwrap();
    Shm::unlink(&name).unwrap();
    assert!(matches!(ro.map(Mode::ReadWrite), Err(Error::ReadOnly { .. })));
    assert!(ro.map(Mode::CopyOnWrite).is_ok());
    drop(seg);
}

#[test]
fn growable_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_with(dir.path(), "g", 4096);
    let ro = GrowableFile::open(&path, Mode::ReadOnly, 1 << 20).unwrap();
    let err = ro.grow_to(8192).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    let err = GrowableFile::open(dir.path().join("missing"), Mode::ReadWrite, 1 << 20).unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::NotFound));
    // Rounding usize::MAX up to a page overflows: refused before any mmap.
    let err = GrowableFile::open(&path, Mode::ReadWrite, usize::MAX).unwrap_err();
    assert!(matches!(err, Error::Invalid { op: "reserve", .. }), "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, .. Default::default() })]

    /// Any string either normalizes to a single, valid path component under
    /// /dev/shm or is refused with `InvalidName` (same property as the
    /// `names_and_windows` fuzz target).
    #[test]
    fn names_normalize_to_one_component(name in "/?[a-z./\\x00-]{0,8}|/?[a-z]{250,260}") {
        match mmkit_region::shm::normalize_name("test", &name) {
            Ok(bare) => {
                proptest::prop_assert!(!bare.is_empty() && bare.len() <= mmkit_region::shm::NAME_MAX);
                proptest::prop_assert!(!bare.contains('/') && !bare.contains('\0'));
                proptest::prop_assert!(bare != "." && bare != "..");
                proptest::prop_assert!(name == bare || name.strip_prefix('/') == Some(bare));
            }
            Err(e) => {
                let is_invalid = matches!(e, Error::InvalidName { .. });
                proptest::prop_assert!(is_invalid);
            }
        }
    }
}
