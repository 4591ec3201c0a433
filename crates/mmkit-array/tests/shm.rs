//! Arrays in POSIX shared memory, shared with another handle and with numpy.

mod common;

use mmkit_array::{Error, MmapArray, Mode, Order};
use mmkit_region::shm::Shm;

#[test]
fn shm_array_round_trip_with_numpy() {
    let name = format!("mmkit-array-test-{}", std::process::id());
    let mut a = MmapArray::<i64>::create_shm(&name, &[3, 2], Order::C).unwrap();
    a.write_row(1, &[10, -11]).unwrap();
    let b = MmapArray::<i64>::open_shm(&name, Mode::ReadOnly).unwrap();
    assert_eq!(b.get(&[1, 1]).unwrap(), -11);
    // A write through one handle is seen through the other: same pages.
    a.set(&[2, 0], 99).unwrap();
    assert_eq!(b.get(&[2, 0]).unwrap(), 99);
    assert_eq!(b.column_stats().unwrap()[0].sum, 109.0);
    let out = common::python(
        "import numpy as np, sys; a = np.load('/dev/shm/' + sys.argv[1], mmap_mode='r'); print(a.tolist())",
        &[&name],
    );
    assert_eq!(out.trim(), "[[0, 0], [10, -11], [99, 0]]");
    let err = MmapArray::<i64>::create_shm(&name, &[1], Order::C).unwrap_err();
    assert!(matches!(err, Error::Region(_)), "{err}");
    Shm::unlink(&name).unwrap();
    assert!(MmapArray::<i64>::open_shm(&name, Mode::ReadOnly).is_err());
}
