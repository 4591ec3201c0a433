//! Exclusive owners: zero-copy slices and ndarray views, and the locks
//! that keep other mmkit writers out (tested across processes).

use std::process::Command;

use mmkit_array::{CreateOptions, Error, MmapArray, Mode, Order};

const CHILD_ENV: &str = "MMKIT_ARRAY_LOCK_CHILD";

#[test]
fn zero_copy_only_for_exclusive_owners() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    let opts = CreateOptions { exclusive: true, ..CreateOptions::default() };
    let mut a = MmapArray::<u32>::create_with(&p, &[4, 2], &opts).unwrap();
    assert!(a.is_exclusive());
    a.data_mut().unwrap().iter_mut().enumerate().for_each(|(i, v)| *v = i as u32);
    assert_eq!(a.data().unwrap(), &[0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(a.get(&[3, 1]).unwrap(), 7);
    // Another writer (any process, this one included) is refused.
    let err = MmapArray::<u32>::open(&p, Mode::ReadWrite).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    let err = MmapArray::<u32>::open_exclusive(&p, Mode::ReadOnly).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(a);

    let b = MmapArray::<u32>::open(&p, Mode::ReadOnly).unwrap();
    let err = b.data().unwrap_err();
    assert!(err.to_string().contains("exclusive"), "{err}");
    // SAFETY: nothing writes the file while the slice lives.
    let unchecked = unsafe { b.data_unchecked() }.unwrap();
    assert_eq!(unchecked[7], 7);
}

/// `raw_data` points at the data (past the header) of any array, the
/// big-endian ones included, with the byte length of the whole shape.
#[test]
fn raw_data_covers_the_data_of_any_array() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    let mut a = MmapArray::<u16>::create(&p, &[3, 2]).unwrap();
    a.set(&[2, 1], 0x0102).unwrap();
    let (ptr, len) = a.raw_data().unwrap();
    assert_eq!(len, 12);
    // SAFETY: nothing else writes the file while the test reads it.
    let last = unsafe { std::ptr::read_unaligned(ptr.add(10).cast::<u16>()) };
    assert_eq!(last, 0x0102);
    drop(a);
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.windows(3).position(|w| w == b"<u2").unwrap();
    bytes[at] = b'>';
    std::fs::write(&p, &bytes).unwrap();
    let b = MmapArray::<u16>::open(&p, Mode::ReadOnly).unwrap();
    // SAFETY: as above.
    assert!(unsafe { b.data_unchecked() }.is_err(), "big-endian data has no typed slice");
    let (ptr, len) = b.raw_data().unwrap();
    assert_eq!(len, 12);
    // SAFETY: as above.
    let last = unsafe { std::ptr::read_unaligned(ptr.add(10).cast::<u16>()) };
    assert_eq!(last, 0x0102, "the raw bytes are the file's, unswapped");
    assert_eq!(b.get(&[2, 1]).unwrap(), 0x0201, "which the typed reads take as big-endian");
}

#[test]
fn lock_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    match MmapArray::<u32>::open(&path, Mode::ReadWrite) {
        Err(Error::Locked { .. }) => std::process::exit(42),
        Err(e) => panic!("{e}"),
        Ok(_) => std::process::exit(0),
    }
}

#[test]
fn exclusive_lock_excludes_writers_in_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    drop(MmapArray::<u32>::create(&p, &[4]).unwrap());
    let exe = std::env::current_exe().unwrap();
    let run = || {
        Command::new(&exe).args(["--exact", "lock_child"]).env(CHILD_ENV, &p).output().unwrap().status.code()
    };
    let owner = MmapArray::<u32>::open_exclusive(&p, Mode::ReadWrite).unwrap();
    assert_eq!(run(), Some(42), "a writer in another process is locked out");
    drop(owner);
    assert_eq!(run(), Some(0), "and gets in once the owner is gone");
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_views() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nd.npy");
    let opts = CreateOptions { order: Order::Fortran, exclusive: true, ..CreateOptions::default() };
    let mut a = MmapArray::<f64>::create_with(&p, &[2, 3], &opts).unwrap();
    a.set(&[1, 2], 5.0).unwrap();
    {
        let mut v = a.as_array_view_mut().unwrap();
        v[[0, 1]] = 3.0;
    }
    let v = a.as_array_view().unwrap();
    assert_eq!(v.shape(), &[2, 3]);
    assert_eq!(v[[1, 2]], 5.0);
    assert_eq!(v[[0, 1]], 3.0);
    assert!(v.t().is_standard_layout(), "Fortran order is the transpose of C order");
    let owned = a.to_ndarray().unwrap();
    assert_eq!(owned, v.to_owned());
    drop(a);
    let shared = MmapArray::<f64>::open(&p, Mode::ReadOnly).unwrap();
    assert!(shared.as_array_view().is_err());
    // SAFETY: nothing writes the file while the view lives.
    let view = unsafe { shared.as_array_view_unchecked() }.unwrap();
    assert_eq!(view[[1, 2]], 5.0);
}

#[test]
fn orders_are_exposed() {
    assert_eq!(Order::default(), Order::C);
}

/// `create` over a file another array holds exclusively is refused as
/// locked, and the held file keeps its data (create builds a new file and
/// renames it into place, so it must check the old one's lock first).
#[test]
fn create_over_an_exclusively_held_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("held.npy");
    drop(MmapArray::<u32>::create(&p, &[2]).unwrap());
    let mut held = MmapArray::<u32>::open_exclusive(&p, Mode::ReadWrite).unwrap();
    held.write_storage(0, &[5, 6]).unwrap();
    let err = MmapArray::<u32>::create(&p, &[8]).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(held);
    assert_eq!(MmapArray::<u32>::open(&p, Mode::ReadOnly).unwrap().to_vec().unwrap(), [5, 6]);
}
