//! proptest properties against a plain `Vec` model: random arrays written,
//! reopened and read back through every accessor; header round trips.

use mmkit_array::header::{Header, HeaderSpec};
use mmkit_array::{CreateOptions, Descr, MmapArray, Mode, Order, Version};
use proptest::prelude::*;

fn unravel(mut k: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        idx[axis] = k % shape[axis];
        k /= shape[axis];
    }
    idx
}

fn arb_case() -> impl Strategy<Value = (Vec<usize>, bool, Vec<i32>)> {
    (proptest::collection::vec(0usize..5, 0..4), any::<bool>()).prop_flat_map(|(shape, fortran)| {
        let n: usize = shape.iter().product();
        (Just(shape), Just(fortran), proptest::collection::vec(any::<i32>(), n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn write_reopen_read((shape, fortran, model) in arb_case(), axis_pick in 0usize..4, cut in 0usize..6) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let order = if fortran { Order::Fortran } else { Order::C };
        let opts = CreateOptions { order, ..CreateOptions::default() };
        let mut a = MmapArray::<i32>::create_with(&p, &shape, &opts).unwrap();
        for (k, v) in model.iter().enumerate() {
            a.set(&unravel(k, &shape), *v).unwrap();
        }
        drop(a);

        let a = MmapArray::<i32>::open(&p, Mode::ReadOnly).unwrap();
        prop_assert_eq!(a.shape(), &shape[..]);
        prop_assert_eq!(a.order(), order);
        prop_assert_eq!(a.to_vec().unwrap(), model.clone());
        let iterated: Vec<i32> = a.iter().map(Result::unwrap).collect();
        prop_assert_eq!(&iterated, &model);
        if !shape.is_empty() {
            let by_rows: Vec<i32> = a.rows().flat_map(|r| r.to_vec().unwrap()).collect();
            prop_assert_eq!(&by_rows, &model);
            prop_assert_eq!(a.rows().count(), shape[0]);
        }
        for (k, v) in model.iter().enumerate() {
            prop_assert_eq!(a.get(&unravel(k, &shape)).unwrap(), *v);
        }
        // Out-of-bounds indices are errors.
        if !shape.is_empty() {
            let mut bad = vec![0; shape.len()];
            bad[0] = shape[0];
            prop_assert!(a.get(&bad).is_err());
        }
        prop_assert!(a.get(&vec![0; shape.len() + 1]).is_err());

        // A slice along one axis matches the model filtered on that axis.
        if !shape.is_empty() {
            let axis = axis_pick % shape.len();
            let start = cut.min(shape[axis]);
            let end = (start + 2).min(shape[axis]);
            let view = a.view().slice_axis(axis, start..end).unwrap();
            let expected: Vec<i32> = model.iter().enumerate()
                .filter(|(k, _)| (start..end).contains(&unravel(*k, &shape)[axis]))
                .map(|(_, v)| *v).collect();
            prop_assert_eq!(view.to_vec().unwrap(), expected);
            if shape[axis] > 0 {
                let i = cut % shape[axis];
                let fixed = a.view().index_axis(axis, i).unwrap();
                let expected: Vec<i32> = model.iter().enumerate()
                    .filter(|(k, _)| unravel(*k, &shape)[axis] == i)
                    .map(|(_, v)| *v).collect();
                prop_assert_eq!(fixed.to_vec().unwrap(), expected);
            }
        }

        // Column statistics of 1-D and 2-D arrays.
        if shape.len() == 2 || shape.len() == 1 {
            let cols = if shape.len() == 2 { shape[1] } else { 1 };
            let stats = a.column_stats().unwrap();
            let sums = a.column_sums().unwrap();
            prop_assert_eq!(stats.len(), cols);
            for c in 0..cols {
                let col: Vec<f64> = model.iter().enumerate()
                    .filter(|(k, _)| cols == 1 || k % cols == c)
                    .map(|(_, v)| f64::from(*v)).collect();
                prop_assert_eq!(stats[c].count, col.len() as u64);
                prop_assert_eq!(stats[c].sum, col.iter().sum::<f64>());
                prop_assert_eq!(sums[c], col.iter().sum::<f64>());
                if !col.is_empty() {
                    prop_assert_eq!(stats[c].min, col.iter().cloned().fold(f64::INFINITY, f64::min));
                    prop_assert_eq!(stats[c].max, col.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
                }
            }
        }

        // Gathers of C-order rows, with repeats, in any order.
        if !fortran && !shape.is_empty() && shape[0] > 0 {
            let rows = shape[0];
            let row_len: usize = shape[1..].iter().product();
            let idx: Vec<usize> = (0..7).map(|i| (i * 3 + cut) % rows).collect();
            let mut out = vec![0; idx.len() * row_len];
            a.gather_rows(&idx, &mut out).unwrap();
            let expected: Vec<i32> = idx.iter()
                .flat_map(|&r| model[r * row_len..(r + 1) * row_len].iter().copied()).collect();
            prop_assert_eq!(out, expected);
            prop_assert!(a.gather_rows(&[rows], &mut vec![0; row_len]).is_err());
        }
    }

    #[test]
    fn header_round_trip(
        shape in proptest::collection::vec(0usize..1_000_000, 0..5),
        fortran in any::<bool>(),
        dtype in 0usize..14,
        big in any::<bool>(),
        version in 0usize..4,
        growable in any::<bool>(),
    ) {
        let dtype = mmkit_array::ALL_DTYPES[dtype];
        let descr = Descr { dtype, big_endian: big && dtype.size() > 1 };
        let version = [Version::Auto, Version::V1, Version::V2, Version::V3][version];
        let growable = growable && !shape.is_empty();
        let spec = HeaderSpec { descr, fortran_order: fortran, shape: shape.clone(), version, growable };
        let bytes = spec.encode().unwrap();
        prop_assert_eq!(bytes.len() % 64, 0);
        let h = Header::parse(&bytes).unwrap();
        prop_assert_eq!(&h.shape, &shape);
        prop_assert_eq!(h.fortran_order, fortran);
        prop_assert_eq!(h.parse_descr().unwrap(), descr);
        prop_assert_eq!(h.data_offset, bytes.len());
        if let Some(v) = version.numbers() {
            prop_assert_eq!(h.version, v);
        }
    }

    #[test]
    fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Header::parse(&bytes);
        let mut with_magic = mmkit_array::header::MAGIC.to_vec();
        with_magic.extend_from_slice(&[1, 0]);
        with_magic.extend_from_slice(&((bytes.len() as u16).to_le_bytes()));
        with_magic.extend_from_slice(&bytes);
        let _ = Header::parse(&with_magic);
    }
}
