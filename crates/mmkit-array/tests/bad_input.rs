//! Bad input: each case gets a clear error, never a panic or an
//! out-of-bounds read. Plus a corruption sweep over every header byte and
//! every truncation length.

use std::path::Path;

use mmkit_array::header::{Header, HeaderSpec, MAGIC, Version};
use mmkit_array::{DType, Descr, Error, MmapArray, Mode, OpenOptions};
use mmkit_region::{Access, Mapping, Share};

fn npy(header_text: &str) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header_text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header_text.as_bytes());
    bytes
}

fn valid_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let p = dir.join("valid.npy");
    let mut a = MmapArray::<f32>::create(&p, &[4, 3]).unwrap();
    for i in 0..4 {
        a.write_row(i, &[i as f32, 1.0, 2.0]).unwrap();
    }
    drop(a);
    let bytes = std::fs::read(&p).unwrap();
    (p, bytes)
}

fn open_f32(path: &Path) -> Result<MmapArray<f32>, Error> {
    MmapArray::<f32>::open(path, Mode::ReadOnly)
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.npy");
    std::fs::write(&p, b"").unwrap();
    let err = open_f32(&p).unwrap_err();
    assert!(matches!(err, Error::NotNpy { .. }), "{err}");
    assert!(err.to_string().contains("empty") && err.to_string().contains("empty.npy"), "{err}");
}

#[test]
fn not_npy_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("text.npy");
    std::fs::write(&p, b"hello, this is a text file, not numpy\n").unwrap();
    let err = open_f32(&p).unwrap_err();
    assert!(matches!(err, Error::NotNpy { .. }), "{err}");
    assert!(err.to_string().contains("magic"), "{err}");
}

#[test]
fn truncated_inside_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let (p, bytes) = valid_file(dir.path());
    std::fs::write(&p, &bytes[..40]).unwrap();
    let err = open_f32(&p).unwrap_err();
    assert!(matches!(err, Error::NotNpy { .. }), "{err}");
    assert!(err.to_string().contains("ends inside the header"), "{err}");
}

#[test]
fn shape_needs_more_bytes_than_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (p, bytes) = valid_file(dir.path());
    std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
    let err = open_f32(&p).unwrap_err();
    match &err {
        Error::Truncated { needed, size, .. } => {
            assert_eq!(*needed, bytes.len() as u64);
            assert_eq!(*size, bytes.len() as u64 - 5);
        }
        other => panic!("{other}"),
    }
    // A shape whose byte count overflows is refused before any arithmetic wraps.
    let huge = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 8), }\n");
    std::fs::write(&p, huge).unwrap();
    let err = open_f32(&p).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    // So is an empty array whose other axes overflow: its row length and
    // strides would wrap although it holds no bytes (numpy refuses it too).
    let empty =
        npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1099511627776, 1099511627776), }\n");
    std::fs::write(&p, empty).unwrap();
    let err = open_f32(&p).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let spec = HeaderSpec {
        descr: Descr::native(DType::F32),
        fortran_order: false,
        shape: vec![0, 1 << 40, 1 << 40],
        version: Version::V1,
        growable: true,
    };
    std::fs::write(&p, spec.encode().unwrap()).unwrap();
    let err = mmkit_array::Appendable::<f32>::open(&p).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}

#[test]
fn misaligned_data_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mis.npy");
    // 10 + 54 = 64 is aligned; make the text 58 bytes so the data starts at 68.
    let mut text = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }".to_string();
    while 10 + text.len() + 1 < 68 {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = npy(&text);
    assert_eq!(bytes.len(), 68);
    bytes.extend_from_slice(&1.5f64.to_le_bytes());
    bytes.extend_from_slice(&(-2.0f64).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let err = MmapArray::<f64>::open(&p, Mode::ReadOnly).unwrap_err();
    assert!(matches!(err, Error::Misaligned { offset: 68, align: 8, .. }), "{err}");
    assert!(err.to_string().contains("allow_unaligned"), "{err}");
    // The copying read path works; zero-copy access still refuses.
    let a: MmapArray<f64> = OpenOptions::new().allow_unaligned(true).exclusive(true).open(&p).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![1.5, -2.0]);
    assert_eq!(a.column_stats().unwrap()[0].sum, -0.5);
    assert!(matches!(a.data().unwrap_err(), Error::Misaligned { .. }));
}

#[test]
fn unknown_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("unknown.npy");
    let mut bytes = npy("{'descr': '<q9', 'fortran_order': False, 'shape': (2,), }                 \n");
    bytes.resize(bytes.len() + 32, 0);
    std::fs::write(&p, &bytes).unwrap();
    let err = open_f32(&p).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDtype { .. }), "{err}");
    assert!(err.to_string().contains("<q9"), "{err}");
}

#[test]
fn bad_versions_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.npy");
    let mut bytes = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }\n");
    bytes[6] = 4;
    std::fs::write(&p, &bytes).unwrap();
    let err = open_f32(&p).unwrap_err();
    assert!(err.to_string().contains("version 4.0"), "{err}");
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[2, 0, 0xff, 0xff, 0xff, 0x7f]);
    std::fs::write(&p, &bytes).unwrap();
    let err = open_f32(&p).unwrap_err();
    assert!(matches!(err, Error::Header { .. }), "{err}");
}

/// Every byte of the header replaced by several values, and every
/// truncation: errors or (harmless) success, never a panic, and any array
/// that opens reads within bounds.
#[test]
fn corruption_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let (p, bytes) = valid_file(dir.path());
    let header_len = Header::parse(&bytes).unwrap().data_offset;
    let q = dir.path().join("corrupt.npy");
    let mut opened = 0;
    for i in 0..header_len {
        for v in [0u8, 0xff, b' ', b'(', b')', b'9', b',', b'\'', b'{', bytes[i] ^ 1] {
            let mut b = bytes.clone();
            b[i] = v;
            // In memory (an anonymous mapping), to keep the sweep fast.
            let map = Mapping::anonymous(b.len(), Share::Private).unwrap();
            map.write_at(0, &b).unwrap();
            if let Ok(a) = OpenOptions::new().open_mapping::<f32>(map, "corrupt") {
                opened += 1;
                let _ = a.to_vec().unwrap();
                let _ = a.column_stats();
            }
            let _ = Header::parse(&b);
        }
    }
    for len in 0..bytes.len() {
        std::fs::write(&q, &bytes[..len]).unwrap();
        assert!(open_f32(&q).is_err(), "truncated to {len} must not open");
    }
    assert!(opened > 0, "some corruptions (in padding) are harmless");
    assert!(open_f32(&p).is_ok());
}

/// A file truncated under an open array: reads fail with the mapping
/// layer's `Poisoned` error instead of killing the process with SIGBUS.
#[test]
fn truncated_under_an_open_array() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shrinks.npy");
    let page = mmkit_region::page_size();
    let rows = 4 * page / 16;
    let mut a = MmapArray::<f32>::create(&p, &[rows, 4]).unwrap();
    a.fill(1.0).unwrap();
    a.flush().unwrap();
    let r = MmapArray::<f32>::open(&p, Mode::ReadOnly).unwrap();
    assert_eq!(r.get(&[rows - 1, 3]).unwrap(), 1.0);
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(page as u64).unwrap();
    let err = r.get(&[rows - 1, 3]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let mut out = vec![0f32; 4];
    assert!(r.gather_rows(&[rows - 1], &mut out).is_err());
    assert!(r.to_vec().is_err());
}

/// An image at an odd offset of a mapping: the header's data offset is
/// aligned, but the data's address is not, so even the unsafe zero-copy
/// accessor must refuse (a misaligned `&[f32]` would be undefined
/// behaviour) while the copying accessors still work.
#[test]
fn misaligned_mapping_refuses_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = valid_file(dir.path());
    let shifted = dir.path().join("shifted");
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&image);
    std::fs::write(&shifted, &bytes).unwrap();
    let map = mmkit_region::MapOptions::new().offset(1).map_path(&shifted).unwrap();
    assert_eq!(map.as_ptr() as usize % 2, 1);
    let arr = OpenOptions::new().open_mapping::<f32>(map, "shifted").unwrap();
    assert_eq!(arr.get(&[2, 0]).unwrap(), 2.0);
    // SAFETY: nothing writes the file while this test runs.
    let err = unsafe { arr.data_unchecked() }.unwrap_err();
    assert!(matches!(err, Error::Misaligned { .. }), "{err}");
}

/// numpy allows at most 64 axes. A header with thousands of axes is
/// refused on open (views recurse once per axis, so such a file could
/// otherwise overflow the stack), and `create` refuses such shapes too.
#[test]
fn too_many_axes() {
    let dims = vec!["1"; 100_000].join(", ");
    let text = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': (2, {dims}, 2), }}\n");
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[2, 0]);
    bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes.resize(bytes.len() + 16, 0);
    let map = Mapping::anonymous(bytes.len(), Share::Private).unwrap();
    map.write_at(0, &bytes).unwrap();
    match OpenOptions::new().open_mapping::<f32>(map, "axes") {
        Err(err) => {
            assert!(matches!(err, Error::Header { .. }), "{err}");
            assert!(err.to_string().contains("64"), "{err}");
        }
        Ok(a) => {
            // What the limit prevents: one stack frame per axis.
            let last = a.ndim() - 1;
            let _ = a.view().slice_axis(last, 0..1).unwrap().to_vec();
            panic!("a header with {} axes opened", a.ndim());
        }
    }
    let shape = vec![1; 65];
    let dir = tempfile::tempdir().unwrap();
    let err = MmapArray::<f32>::create(dir.path().join("a.npy"), &shape).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    MmapArray::<f32>::create(dir.path().join("b.npy"), &shape[..64]).unwrap();
}

/// An `.npy` v1.0 image with `text` as its header dict, padded so the
/// data starts at a multiple of 64, followed by `data`.
fn padded_npy(text: &str, data: &[u8]) -> Vec<u8> {
    let mut t = text.as_bytes().to_vec();
    let total = MAGIC.len() + 4 + t.len() + 1;
    t.extend(std::iter::repeat_n(b' ', (64 - total % 64) % 64));
    t.push(b'\n');
    let mut out = npy("");
    out.truncate(MAGIC.len() + 2);
    out.extend_from_slice(&(t.len() as u16).to_le_bytes());
    out.extend_from_slice(&t);
    out.extend_from_slice(data);
    out
}

/// The column scans must not size anything by the header's column count
/// alone: a 128-byte file claiming `(0, 2**40)` used to abort the process
/// allocating terabytes. Too many columns is a shape error naming the
/// file; a modest count of empty columns gives empty statistics.
#[test]
fn column_scans_of_a_tiny_file_with_a_huge_column_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cols.npy");
    let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 1099511627776), }";
    std::fs::write(&p, padded_npy(header, &[])).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 128);
    let a = MmapArray::<u8>::open(&p, Mode::ReadOnly).unwrap();
    for err in [a.column_stats().unwrap_err(), a.column_sums().unwrap_err()] {
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert!(err.to_string().contains("cols.npy") && err.to_string().contains("columns"), "{err}");
    }

    let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 1000), }";
    std::fs::write(&p, padded_npy(header, &[])).unwrap();
    let a = MmapArray::<u8>::open(&p, Mode::ReadOnly).unwrap();
    let stats = a.column_stats().unwrap();
    assert_eq!(stats.len(), 1000);
    assert!(stats.iter().all(|c| c.count == 0 && c.min.is_nan() && c.max.is_nan()));
    assert_eq!(a.column_sums().unwrap(), vec![0.0; 1000]);
}

/// Runs `f` in a thread; `None` when it has not returned after 10 s, in
/// which case `unblock` is called so the thread can finish.
fn within_10s<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static, unblock: impl Fn()) -> Option<R> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let r = rx.recv_timeout(std::time::Duration::from_secs(10)).ok();
    if r.is_none() {
        unblock();
    }
    t.join().unwrap();
    r
}

/// A FIFO where an `.npy` file is expected is refused at once with an
/// error naming it, in every open mode and by `read_header`, instead of
/// blocking in open(2) until a writer appears.
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.npy");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let open_writer = || {
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    };
    for mode in [Mode::ReadOnly, Mode::ReadWrite, Mode::CopyOnWrite] {
        let p = fifo.clone();
        let err = within_10s(move || MmapArray::<f32>::open(&p, mode).map(drop), open_writer)
            .unwrap_or_else(|| panic!("open in {mode:?} blocked on a FIFO"))
            .unwrap_err();
        assert!(err.to_string().contains("fifo.npy: not a regular file"), "{err}");
    }
    let p = fifo.clone();
    let err = within_10s(move || mmkit_array::read_header(&p).map(drop), open_writer)
        .expect("read_header blocked on a FIFO")
        .unwrap_err();
    assert!(err.to_string().contains("fifo.npy: not a regular file"), "{err}");
}

/// A `create` that fails on an impossible size leaves the file already at
/// the path as it was and no new or temporary file behind, whether the
/// size is refused up front (beyond a file size) or by the filesystem or
/// the mapping (just under it).
#[test]
fn failed_create_keeps_the_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.npy");
    let mut a = MmapArray::<u8>::create(&path, &[4]).unwrap();
    a.write_storage(0, &[1, 2, 3, 4]).unwrap();
    drop(a);
    let fresh = dir.path().join("fresh.npy");
    for len in [isize::MAX as usize - 8, i64::MAX as usize - 4096] {
        for p in [&path, &fresh] {
            let err = MmapArray::<u8>::create(p, &[len]).unwrap_err();
            assert!(err.to_string().contains(p.file_name().unwrap().to_str().unwrap()), "{err}");
        }
        let a = MmapArray::<u8>::open(&path, Mode::ReadOnly).unwrap();
        assert_eq!(a.to_vec().unwrap(), [1, 2, 3, 4]);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["keep.npy"], "after a failed create of {len} bytes");
    }
}

/// Text from a header reaches error messages with its control characters
/// escaped, so an error stays one line and cannot send escape sequences to
/// a terminal: a structured descr spread over lines, a `\`-escaped newline
/// and raw ESC bytes in a descr string.
#[test]
fn header_text_in_errors_stays_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, shown) in [
        (
            "list.npy",
            "{'descr': [('a', '<i4'),\n ('b', '<f8')], 'fortran_order': False, 'shape': (2,), }",
            "\\n",
        ),
        (
            "escaped.npy",
            "{'descr': '<f4\\\nsecond line', 'fortran_order': False, 'shape': (2,), }",
            "<f4\\nsecond",
        ),
        ("esc.npy", "{'descr': '\x1b[2J\x1b[31m<f4', 'fortran_order': False, 'shape': (2,), }", "\\u{1b}[2J"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, padded_npy(text, &[0; 8])).unwrap();
        let err = open_f32(&path).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDtype { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(!msg.chars().any(char::is_control), "{name}: {msg:?}");
        assert!(msg.contains(name) && msg.contains(shown), "{name}: {msg:?}");
    }
}
