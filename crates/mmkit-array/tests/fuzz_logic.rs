//! The fuzz target's oracle (`header::check_header_bytes`), run on
//! random and mutated inputs in every `cargo test`.

use mmkit_array::Descr;
use mmkit_array::header::{Header, HeaderSpec, MAGIC, Version, check_header_bytes};
use proptest::prelude::*;

fn seed_headers() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (i, shape) in [vec![], vec![3], vec![2, 5], vec![0, 7, 1]].into_iter().enumerate() {
        let spec = HeaderSpec {
            descr: Descr { dtype: mmkit_array::ALL_DTYPES[i * 3], big_endian: i % 2 == 1 },
            fortran_order: i % 2 == 0,
            shape: shape.clone(),
            version: [Version::V1, Version::V2, Version::V3, Version::Auto][i],
            growable: !shape.is_empty(),
        };
        seeds.push(spec.encode().unwrap());
    }
    let text = "{'descr': [('x', '<f4'), ('y', [('z', '|u1')])], 'fortran_order': False, 'shape': (2L,), }\n";
    let mut s = MAGIC.to_vec();
    s.extend_from_slice(&[1, 0]);
    s.extend_from_slice(&(text.len() as u16).to_le_bytes());
    s.extend_from_slice(text.as_bytes());
    seeds.push(s);
    seeds
}

#[test]
fn seeds_pass_the_oracle() {
    for seed in seed_headers() {
        check_header_bytes(&seed).unwrap();
        assert!(Header::parse(&seed).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(check_header_bytes(&data), Ok(()));
    }

    #[test]
    fn mutated_seeds(which in 0usize..5, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut data = seed_headers()[which].clone();
        for (pos, byte) in edits {
            let i = pos % data.len();
            data[i] = byte;
        }
        let len = data.len();
        data.truncate(len - cut % 8);
        prop_assert_eq!(check_header_bytes(&data), Ok(()));
    }
}
