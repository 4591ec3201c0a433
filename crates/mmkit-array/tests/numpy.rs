//! Round trips with real numpy: files numpy writes are read by mmkit, and
//! files mmkit creates are read by numpy (np.load with and without
//! mmap_mode, and numpy.memmap), for every dtype, both orders, 0-d and
//! empty arrays, big-endian data and header versions 1.0, 2.0 and 3.0.

mod common;

use std::path::Path;

use common::python;
use mmkit_array::{CreateOptions, Element, Error, MmapArray, Mode, Order, Version};

/// numpy writes one file per (dtype, shape, order) plus the expected
/// values as little-endian C-order bytes; prints a manifest.
const GENERATE: &str = r#"
import numpy as np, sys, os
d = sys.argv[1]
dtypes = ['?','i1','i2','i4','i8','u1','u2','u4','u8','f2','f4','f8','c8','c16']
shapes = {'2d': (3, 4), '1d': (5,), '0d': (), 'empty': (0, 3), '3d': (2, 3, 2)}
def pattern(dt, shape):
    n = int(np.prod(shape))
    k = np.arange(n)
    if dt == '?':
        a = k % 3 == 0
    elif dt[0] == 'i':
        a = ((k * 37 + 3) % 120 - 60).astype(dt)
    elif dt[0] == 'u':
        a = ((k * 37 + 3) % 250).astype(dt)
    elif dt[0] == 'f':
        a = (k * 0.25 - 3).astype(dt)
    else:
        a = (k * 0.5 - 1j * k).astype(dt)
    return a.reshape(shape)
for dt in dtypes:
    for sname, shape in shapes.items():
        for order in 'CF':
            if order == 'F' and len(shape) < 2:
                continue
            a = pattern(dt, shape).copy(order=order)
            name = f'{dt}_{sname}_{order}'
            np.save(os.path.join(d, name + '.npy'), a)
            le = np.dtype(dt).newbyteorder('<')
            open(os.path.join(d, name + '.bin'), 'wb').write(a.astype(le).tobytes(order='C'))
            stored = 'F' if a.flags.f_contiguous and not a.flags.c_contiguous else 'C'
            print(name, dt, ','.join(map(str, shape)) or '-', stored)
    if np.dtype(dt).itemsize > 1:
        for order in 'CF':
            a = pattern(dt, (3, 4)).astype(np.dtype(dt).newbyteorder('>'))
            a = a.copy(order=order)
            name = f'be_{dt}_{order}'
            np.save(os.path.join(d, name + '.npy'), a)
            le = np.dtype(dt).newbyteorder('<')
            open(os.path.join(d, name + '.bin'), 'wb').write(a.astype(le).tobytes(order='C'))
            print(name, dt, '3,4', order)
for v in [(1, 0), (2, 0), (3, 0)]:
    a = pattern('f8', (4, 2))
    name = f'version{v[0]}'
    with open(os.path.join(d, name + '.npy'), 'wb') as f:
        np.lib.format.write_array(f, a, version=v)
    open(os.path.join(d, name + '.bin'), 'wb').write(a.tobytes())
    print(name, 'f8', '4,2', 'C')
"#;

/// Checks every file mmkit wrote against the expected bytes, three ways.
const VERIFY: &str = r#"
import numpy as np, sys, os
d = sys.argv[1]
for line in open(os.path.join(d, 'created.txt')):
    name, dt, shape, order, version = line.split()
    shape = tuple(int(x) for x in shape.split(',') if x and x != '-')
    p = os.path.join(d, 'out_' + name + '.npy')
    expected = np.frombuffer(open(os.path.join(d, name + '.bin'), 'rb').read(), dtype='<' + dt if dt != '?' else '?').reshape(shape)
    with open(p, 'rb') as f:
        ver = np.lib.format.read_magic(f)
        if ver == (1, 0):
            hshape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            hshape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    assert offset % 64 == 0, (name, offset)
    assert ver == tuple(int(x) for x in version.split('.')), (name, ver)
    a = np.load(p, mmap_mode='r')
    b = np.load(p)
    m = np.memmap(p, dtype=dtype, mode='r', offset=offset, shape=hshape, order='F' if fortran else 'C')
    for x in (a, b, m):
        assert x.dtype == expected.dtype, (name, x.dtype, expected.dtype)
        assert x.shape == expected.shape, (name, x.shape)
        assert np.array_equal(x, expected), (name, x, expected)
    assert fortran == (order == 'F'), name
    if order == 'F' and a.ndim > 1:
        assert a.flags.f_contiguous and not a.flags.c_contiguous, name
print('verified')
"#;

struct Case {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    order: Order,
}

fn manifest(text: &str) -> Vec<Case> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Case {
                name: f[0].to_string(),
                dtype: f[1].to_string(),
                shape: f[2]
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != "-")
                    .map(|s| s.parse().unwrap())
                    .collect(),
                order: if f[3] == "F" { Order::Fortran } else { Order::C },
            }
        })
        .collect()
}

fn read_and_compare<T: Element>(dir: &Path, case: &Case) {
    let npy = dir.join(format!("{}.npy", case.name));
    let expected = std::fs::read(dir.join(format!("{}.bin", case.name))).unwrap();
    let a = MmapArray::<T>::open(&npy, Mode::ReadOnly).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    assert_eq!(a.shape(), &case.shape[..], "{}", case.name);
    assert_eq!(a.order(), case.order, "{}", case.name);
    assert_eq!(a.data_offset() % 64, 0);
    let v = a.to_vec().unwrap();
    assert_eq!(bytemuck::cast_slice::<T, u8>(&v), &expected[..], "{}", case.name);
    let it: Vec<T> = a.iter().map(Result::unwrap).collect();
    assert_eq!(it, v, "{}: iter", case.name);
    if let Some(last) = v.last() {
        let idx: Vec<usize> = case.shape.iter().map(|d| d - 1).collect();
        assert_eq!(a.get(&idx).unwrap(), *last, "{}: get", case.name);
    }
    // Copy-on-write: writes stay private and the values are right.
    if !v.is_empty() {
        let mut c = MmapArray::<T>::open(&npy, Mode::CopyOnWrite).unwrap();
        let idx = vec![0; case.shape.len()];
        c.set(&idx, v[1 % v.len()]).unwrap();
        assert_eq!(c.get(&idx).unwrap(), v[1 % v.len()]);
        let again = MmapArray::<T>::open(&npy, Mode::ReadOnly).unwrap();
        assert_eq!(again.get(&idx).unwrap(), v[0], "{}: c mode must not reach the file", case.name);
    }
}

fn create_like<T: Element>(dir: &Path, case: &Case, version: Version) {
    let expected = std::fs::read(dir.join(format!("{}.bin", case.name))).unwrap();
    let values: Vec<T> = expected.chunks_exact(size_of::<T>()).map(bytemuck::pod_read_unaligned).collect();
    let out = dir.join(format!("out_{}.npy", case.name));
    let opts = CreateOptions { order: case.order, version, ..CreateOptions::default() };
    let mut a = MmapArray::<T>::create_with(&out, &case.shape, &opts).unwrap();
    for (k, v) in values.iter().enumerate() {
        let mut idx = vec![0; case.shape.len()];
        let mut rest = k;
        for axis in (0..case.shape.len()).rev() {
            idx[axis] = rest % case.shape[axis];
            rest /= case.shape[axis];
        }
        a.set(&idx, *v).unwrap();
    }
    a.flush().unwrap();
}

#[test]
fn numpy_files_read_by_mmkit_and_mmkit_files_read_by_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases = manifest(&python(GENERATE, &[d]));
    assert!(cases.len() > 100, "{} cases", cases.len());
    let mut created = String::new();
    for case in &cases {
        dispatch!(case.dtype.as_str(), read_and_compare(dir.path(), case));
        if case.name.starts_with("be_") {
            continue;
        }
        let version = match case.name.as_str() {
            "version2" => Version::V2,
            "version3" => Version::V3,
            _ => Version::Auto,
        };
        dispatch!(case.dtype.as_str(), create_like(dir.path(), case, version));
        let shape: Vec<String> = case.shape.iter().map(ToString::to_string).collect();
        let shape = if shape.is_empty() { "-".to_string() } else { shape.join(",") };
        let order = if case.order == Order::Fortran { "F" } else { "C" };
        let v = match version {
            Version::V2 => "2.0",
            Version::V3 => "3.0",
            _ => "1.0",
        };
        created += &format!("{} {} {} {order} {v}\n", case.name, case.dtype, shape);
    }
    std::fs::write(dir.path().join("created.txt"), created).unwrap();
    assert_eq!(python(VERIFY, &[d]).trim(), "verified");
}

#[test]
fn big_endian_writes_are_swapped_too() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("be.npy");
    let ps = p.to_str().unwrap();
    python("import numpy as np, sys; np.save(sys.argv[1], np.zeros((2, 2), dtype='>i4'))", &[ps]);
    let mut a = MmapArray::<i32>::open(&p, Mode::ReadWrite).unwrap();
    assert!(a.descr().big_endian);
    a.set(&[1, 0], 0x0102_0304).unwrap();
    a.flush().unwrap();
    drop(a);
    let out = python("import numpy as np, sys; print(np.load(sys.argv[1])[1, 0])", &[ps]);
    assert_eq!(out.trim(), (0x0102_0304).to_string());
}

#[test]
fn unsupported_dtypes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    python(
        r#"
import numpy as np, sys, os
d = sys.argv[1]
np.save(os.path.join(d, 'object.npy'), np.array([1, 'a', None], dtype=object), allow_pickle=True)
np.save(os.path.join(d, 'struct.npy'), np.zeros(3, dtype=[('a', '<i4'), ('b', '<f8')]))
np.save(os.path.join(d, 'str.npy'), np.array(['ab', 'cd']))
np.save(os.path.join(d, 'time.npy'), np.zeros(3, dtype='M8[s]'))
"#,
        &[d],
    );
    for (name, needle) in [
        ("object", "object arrays"),
        ("struct", "structured"),
        ("str", "not supported"),
        ("time", "not supported"),
    ] {
        let err = MmapArray::<f64>::open(dir.path().join(format!("{name}.npy")), Mode::ReadOnly).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDtype { .. }), "{name}: {err}");
        assert!(err.to_string().contains(needle), "{name}: {err}");
    }
    let err = MmapArray::<f32>::open(dir.path().join("struct.npy"), Mode::ReadOnly).unwrap_err();
    assert!(err.to_string().contains("struct.npy"), "{err}");
}

#[test]
fn dtype_mismatch_names_both_types() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    MmapArray::<f32>::create(&p, &[3]).unwrap();
    let err = MmapArray::<f64>::open(&p, Mode::ReadOnly).unwrap_err();
    assert!(matches!(err, Error::DtypeMismatch { .. }), "{err}");
    // numpy's names, as numpy prints them, and the descr as the file has it.
    let text = err.to_string();
    assert!(text.contains("holds float32 (<f4)") && text.contains("array type is float64"), "{err}");
    MmapArray::<mmkit_array::Complex32>::create(&p, &[3]).unwrap();
    let err = MmapArray::<mmkit_array::Complex64>::open(&p, Mode::ReadOnly).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("holds complex64 (<c8)") && text.contains("array type is complex128"), "{err}");
    assert!(!text.contains("c64"), "{err}");
}
