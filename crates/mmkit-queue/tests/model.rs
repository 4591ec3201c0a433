//! proptest: single-process sequences of appends, reads, cursor commits
//! and reopenings against a simple model, with tiny segments.

use mmkit_queue::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append(usize, u8),
    Batch(Vec<usize>),
    Claim(usize, bool),
    Read(usize),
    Commit,
    ReopenCursor,
    ReadAt(usize),
    Seek(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..300usize, any::<u8>()).prop_map(|(l, b)| Op::Append(l, b)),
        1 => prop::collection::vec(0..120usize, 1..20).prop_map(Op::Batch),
        1 => (0..300usize, any::<bool>()).prop_map(|(l, c)| Op::Claim(l, c)),
        3 => (1..20usize).prop_map(Op::Read),
        1 => Just(Op::Commit),
        1 => Just(Op::ReopenCursor),
        1 => any::<usize>().prop_map(Op::ReadAt),
        1 => any::<usize>().prop_map(Op::Seek),
    ]
}

fn body(len: usize, byte: u8) -> Vec<u8> {
    (0..len).map(|i| byte.wrapping_add(i as u8)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::options().create(true).segment_size(4096).max_message_size(300).open(dir.path().join("q")).unwrap();
        let mut p = q.producer().unwrap();
        // Model: every committed message in order, with its index.
        let mut log: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut cursor = q.cursor("m").unwrap();
        let mut pos = 0usize; // model position of the cursor (into `log`)
        let mut committed = 0usize;
        let mut reader = q.reader(Start::Beginning).unwrap();
        let mut reader_pos = 0usize;
        for op in ops {
            match op {
                Op::Append(len, b) => {
                    let m = body(len, b);
                    let i = p.append(&m).unwrap();
                    prop_assert!(log.last().is_none_or(|l| l.0 < i));
                    log.push((i, m));
                }
                Op::Batch(lens) => {
                    let msgs: Vec<Vec<u8>> = lens.iter().map(|&l| body(l, l as u8)).collect();
                    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
                    let idx = p.append_batch(&refs).unwrap();
                    prop_assert_eq!(idx.len(), msgs.len());
                    for (i, m) in idx.into_iter().zip(msgs) {
                        log.push((i, m));
                    }
                }
                Op::Claim(len, commit) => {
                    let mut c = p.claim(len).unwrap();
                    let m = body(len, 7);
                    c.copy_from_slice(&m);
                    if commit {
                        let i = c.commit().unwrap();
                        log.push((i, m));
                    }
                }
                Op::Read(n) => {
                    for _ in 0..n {
                        match cursor.next().unwrap() {
                            Some(r) => {
                                prop_assert_eq!((r.index(), r.payload()), (log[pos].0, log[pos].1.as_slice()));
                                pos += 1;
                            }
                            None => prop_assert_eq!(pos, log.len()),
                        }
                        if let Some(r) = reader.next().unwrap() {
                            prop_assert_eq!((r.index(), r.payload()), (log[reader_pos].0, log[reader_pos].1.as_slice()));
                            reader_pos += 1;
                        } else {
                            prop_assert_eq!(reader_pos, log.len());
                        }
                    }
                }
                Op::Commit => {
                    cursor.commit().unwrap();
                    committed = pos;
                }
                Op::ReopenCursor => {
                    drop(cursor);
                    cursor = q.cursor("m").unwrap();
                    pos = committed;
                }
                Op::ReadAt(k) if !log.is_empty() => {
                    let (i, m) = &log[k % log.len()];
                    let mut buf = Vec::new();
                    let info = q.read_at(*i, &mut buf).unwrap();
                    prop_assert_eq!(info.index, *i);
                    prop_assert_eq!(&buf, m);
                }
                Op::Seek(k) if !log.is_empty() => {
                    reader_pos = k % log.len();
                    reader.seek(log[reader_pos].0).unwrap();
                }
                _ => {}
            }
        }
        // Everything is there, in order, for a fresh reader.
        let mut r = q.reader(Start::Beginning).unwrap();
        for (i, m) in &log {
            let rec = r.next().unwrap().unwrap();
            prop_assert_eq!((rec.index(), rec.payload()), (*i, m.as_slice()));
        }
        prop_assert!(r.next().unwrap().is_none());
        prop_assert!(q.check().unwrap().is_clean());
    }
}
