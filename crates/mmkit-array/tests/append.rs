//! Appendable arrays: growth, reopening, numpy-written headers, and
//! crash safety under SIGKILL at random points, checked with numpy.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::python;
use mmkit_array::{Appendable, Error, MmapArray, Mode};

const CHILD_ENV: &str = "MMKIT_ARRAY_APPEND_CHILD";

fn row(r: usize) -> [f64; 3] {
    [r as f64, r as f64 + 0.25, -(r as f64)]
}

#[test]
fn append_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    let mut a = Appendable::<f64>::create(&p, &[3]).unwrap();
    assert_eq!(a.rows(), 0);
    for r in 0..1000 {
        a.append(&row(r)).unwrap();
    }
    assert_eq!(a.array().shape(), &[1000, 3]);
    assert_eq!(a.array().get(&[999, 2]).unwrap(), -999.0);
    let err = a.append(&[1.0, 2.0]).unwrap_err();
    assert!(matches!(err, Error::BufferLength { .. }), "{err}");
    a.sync().unwrap();
    a.finish().unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    let r = MmapArray::<f64>::open(&p, Mode::ReadOnly).unwrap();
    assert_eq!(len, r.data_offset() as u64 + 1000 * 24, "finish trims the preallocated tail");
    assert_eq!(r.row(500).unwrap().to_vec().unwrap(), row(500));
    drop(r);

    let mut a = Appendable::<f64>::open(&p).unwrap();
    assert_eq!(a.rows(), 1000);
    a.append(&row(1000)).unwrap();
    drop(a);
    let out = python(
        "import numpy as np, sys; a = np.load(sys.argv[1], mmap_mode='r'); print(a.shape, a[1000].tolist())",
        &[p.to_str().unwrap()],
    );
    assert_eq!(out.trim(), "(1001, 3) [1000.0, 1000.25, -1000.0]");
}

#[test]
fn one_appender_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    let mut a = Appendable::<u8>::create(&p, &[]).unwrap();
    a.append(&[1, 2, 3]).unwrap();
    let err = Appendable::<u8>::open(&p).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    // Creating over a file another appender holds fails before truncating it.
    let err = Appendable::<u8>::create(&p, &[]).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(a.array().to_vec().unwrap(), vec![1, 2, 3]);
    assert_eq!(MmapArray::<u8>::open(&p, Mode::ReadOnly).unwrap().shape(), &[3]);
    let err = MmapArray::<u8>::open(&p, Mode::ReadWrite).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    // Readers need no lock.
    MmapArray::<u8>::open(&p, Mode::ReadOnly).unwrap();
}

#[test]
fn numpy_written_header_is_converted_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("np.npy");
    let ps = p.to_str().unwrap();
    python("import numpy as np, sys; np.save(sys.argv[1], np.arange(15, dtype='<f4').reshape(5, 3))", &[ps]);
    let before = MmapArray::<f32>::open(&p, Mode::ReadOnly).unwrap().data_offset();
    // Opening with the wrong element type fails and leaves the file alone.
    let original = std::fs::read(&p).unwrap();
    let err = Appendable::<f64>::open(&p).unwrap_err();
    assert!(matches!(err, Error::DtypeMismatch { .. }), "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), original);
    let mut a = Appendable::<f32>::open(&p).unwrap();
    assert_eq!(a.array().data_offset(), before, "the data does not move");
    a.append(&[15.0, 16.0, 17.0, 18.0, 19.0, 20.0]).unwrap();
    drop(a);
    let out = python(
        "import numpy as np, sys; a = np.load(sys.argv[1]); assert (a.ravel() == np.arange(21)).all(), a; print(a.shape)",
        &[ps],
    );
    assert_eq!(out.trim(), "(7, 3)");
}

#[test]
fn fortran_and_0d_arrays_cannot_grow() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.npy");
    let opts = mmkit_array::CreateOptions { order: mmkit_array::Order::Fortran, ..Default::default() };
    drop(MmapArray::<i32>::create_with(&p, &[2, 2], &opts).unwrap());
    assert!(matches!(Appendable::<i32>::open(&p).unwrap_err(), Error::Unsupported { .. }));
    drop(MmapArray::<i32>::create(&p, &[]).unwrap());
    assert!(matches!(Appendable::<i32>::open(&p).unwrap_err(), Error::Unsupported { .. }));
}

/// Child role: append rows forever until killed.
#[test]
fn append_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let mut a = Appendable::<f64>::open(Path::new(&path)).unwrap();
    let mut i = 0usize;
    loop {
        let batch = 1 + (i * 7) % 50;
        let start = a.rows();
        let rows: Vec<f64> = (start..start + batch).flat_map(row).collect();
        a.append(&rows).unwrap();
        i += 1;
    }
}

#[test]
fn sigkilled_appender_leaves_a_file_numpy_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("crash.npy");
    drop(Appendable::<f64>::create(&p, &[3]).unwrap());
    let exe = std::env::current_exe().unwrap();
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut copies = Vec::new();
    let mut with_tail = 0;
    for round in 0..10 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        // Child start-up takes a few ms; kill within the first few ms of appending
        // so the file stays small and the numpy check fast.
        let delay = Duration::from_micros(2_000 + (seed >> 33) % 8_000);
        let mut child = Command::new(&exe)
            .args(["--exact", "append_child", "--nocapture"])
            .env(CHILD_ENV, &p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        // A child that failed on its own (a panic exits with 101) would
        // leave an untouched file that passes every check below.
        assert_eq!(status.signal(), Some(9), "the appender died before the kill: {status}");
        let copy = dir.path().join(format!("copy{round}.npy"));
        std::fs::copy(&p, &copy).unwrap();
        copies.push(copy.to_str().unwrap().to_string());
        // mmkit reads it too, and every announced row is complete.
        let a = MmapArray::<f64>::open(&p, Mode::ReadOnly).unwrap();
        let needed = a.data_offset() as u64 + a.shape()[0] as u64 * 24;
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len >= needed, "the file is never shorter than its header says");
        if len > needed {
            with_tail += 1;
        }
        if let Some(last) = a.shape()[0].checked_sub(1) {
            assert_eq!(a.row(last).unwrap().to_vec().unwrap(), row(last));
        }
    }
    let args: Vec<&str> = copies.iter().map(String::as_str).collect();
    let out = python(
        r#"
import numpy as np, sys
prev = 0
for p in sys.argv[1:]:
    for a in (np.load(p, mmap_mode='r'), np.load(p)):
        n = a.shape[0]
        r = np.arange(n, dtype='f8')
        assert a.shape == (n, 3), a.shape
        assert (a == np.stack([r, r + 0.25, -r], axis=1)).all(), p
    assert n >= prev, (p, n, prev)
    prev = n
    print(n)
"#,
        &args,
    );
    let counts: Vec<u64> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
    eprintln!("rows after each kill: {counts:?}");
    assert_eq!(counts.len(), 10);
    assert!(counts.last().unwrap() > &0, "the children appended nothing: {counts:?}");
    // numpy loaded files with preallocated bytes past the data, both ways.
    assert!(with_tail > 0, "no kill left a preallocated tail");
}
