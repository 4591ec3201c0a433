//! The API surface beyond the model test: typed layer, the MMKV layer,
//! group commit from several threads, watch, append, range delete.

use std::time::Duration;

use mmkit_kv::{Codec, Db, Durability, Error, Kv, Pod};

#[test]
fn typed_tables_order_integers_numerically() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let mut w = db.write().unwrap();
    let mut t = w.table("nums").unwrap();
    for k in [-5i64, 3, -1, 100, 0, i64::MIN, i64::MAX] {
        t.put_typed(&k, &format!("v{k}")).unwrap();
    }
    assert_eq!(t.get_typed::<i64, String>(&-1).unwrap().as_deref(), Some("v-1"));
    w.commit().unwrap();
    let r = db.read().unwrap();
    let typed = r.typed::<i64, String>("nums").unwrap();
    let keys: Vec<i64> = typed.iter().map(|e| e.unwrap().0).collect();
    assert_eq!(keys, [i64::MIN, -5, -1, 0, 3, 100, i64::MAX]);
    assert_eq!(typed.get(&100).unwrap().as_deref(), Some("v100"));
    assert_eq!(typed.len(), 7);
    // A value of the wrong shape is a decode error, not garbage.
    let wrong = r.typed::<i64, u64>("nums").unwrap();
    assert!(matches!(wrong.get(&3), Err(Error::Decode { ty: "u64", .. })));
    // Pod values round trip.
    assert_eq!(Pod::<[u32; 3]>::decode(&Pod([1u32, 2, 3]).encode()).unwrap(), Pod([1, 2, 3]));
    assert!(Pod::<u64>::decode(&[1, 2, 3]).is_err());
}

#[test]
fn kv_typed_getters() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Kv::open(dir.path().join("kv")).unwrap();
    kv.set("i", -42i64).unwrap();
    kv.set("f", 2.5f64).unwrap();
    kv.set("b", true).unwrap();
    kv.set("s", "text").unwrap();
    kv.set("bytes", &[0u8, 255][..]).unwrap();
    assert_eq!(kv.get_i64("i").unwrap(), Some(-42));
    assert_eq!(kv.get_f64("f").unwrap(), Some(2.5));
    assert_eq!(kv.get_bool("b").unwrap(), Some(true));
    assert_eq!(kv.get_string("s").unwrap().as_deref(), Some("text"));
    assert_eq!(kv.get_bytes("bytes").unwrap(), Some(vec![0, 255]));
    assert!(matches!(kv.get_i64("s"), Err(Error::Decode { .. })));
    assert!(matches!(kv.get_bool("i"), Err(Error::Decode { .. })));
    assert!(kv.remove("s").unwrap());
    assert!(!kv.remove("s").unwrap());
    assert_eq!(kv.get_string("s").unwrap(), None);
    assert!(kv.contains("i").unwrap());
    drop(kv);
    // Each set was its own commit and survives reopening.
    let kv = Kv::open(dir.path().join("kv")).unwrap();
    assert_eq!(kv.get_i64("i").unwrap(), Some(-42));
}

#[test]
fn group_commits_from_threads_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::options().create(true).durability(Durability::Group).open(dir.path().join("db")).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let db = &db;
            s.spawn(move || {
                for i in 0..25u32 {
                    let mut w = db.write().unwrap();
                    w.table("t").unwrap().put([t.to_be_bytes(), i.to_be_bytes()].concat(), "v").unwrap();
                    let txnid = w.commit().unwrap();
                    // Acknowledged only once on disk.
                    assert!(db.stat().unwrap().durable >= txnid);
                }
            });
        }
    });
    assert_eq!(db.read().unwrap().table("t").unwrap().len(), 100);
    assert_eq!(db.check().unwrap().leaked_pages, 0);
}

#[test]
fn watch_sees_changes_to_a_key_and_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::options().create(true).durability(Durability::Eventual).open(dir.path().join("db")).unwrap();
    let mut key_watch = db.watch("t", "user:1", false).unwrap();
    let mut prefix_watch = db.watch("t", "user:", true).unwrap();
    assert!(key_watch.wait(Some(Duration::from_millis(20))).unwrap().is_empty(), "nothing changed yet");
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            let mut w = db.write().unwrap();
            w.table("t").unwrap().put("other", "x").unwrap();
            w.commit().unwrap();
            let mut w = db.write().unwrap();
            w.table("t").unwrap().put("user:1", "ada").unwrap();
            w.table("t").unwrap().put("user:2", "alan").unwrap();
            w.commit().unwrap();
        });
        let changes = key_watch.wait(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].key.as_slice(), changes[0].value.as_deref()),
            (&b"user:1"[..], Some(&b"ada"[..]))
        );
    });
    let changes = prefix_watch.wait(Some(Duration::from_secs(10))).unwrap();
    let keys: Vec<_> = changes.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys, [b"user:1".to_vec(), b"user:2".to_vec()]);
    let mut w = db.write().unwrap();
    w.table("t").unwrap().delete("user:2").unwrap();
    w.commit().unwrap();
    let changes = prefix_watch.wait(Some(Duration::from_secs(10))).unwrap();
    assert_eq!((changes.len(), changes[0].value.is_none()), (1, true));
}

#[test]
fn append_range_delete_first_last_clear() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let mut w = db.write().unwrap();
    let mut t = w.table("log").unwrap();
    for i in 0u32..20_000 {
        t.append(i.to_be_bytes(), [7u8; 100]).unwrap();
    }
    assert!(t.append(5u32.to_be_bytes(), "late").is_err(), "append out of order");
    assert_eq!(t.delete_range(100u32.to_be_bytes()..19_000u32.to_be_bytes()).unwrap(), 18_900);
    assert_eq!(t.len(), 1100);
    let view = t.view();
    assert_eq!(view.first().unwrap().unwrap().0, 0u32.to_be_bytes());
    assert_eq!(view.last().unwrap().unwrap().0, 19_999u32.to_be_bytes());
    w.commit().unwrap();
    // Appended pages are full: 20k entries of 114 B take 2.3 MB in full
    // pages (half-full pages, as random inserts leave them, would take
    // 4.5 MB).
    let bytes = db.stat().unwrap().pages * mmkit_kv::PAGE as u64;
    assert!(bytes < 3 << 20, "{bytes} bytes");
    let mut w = db.write().unwrap();
    w.table("log").unwrap().clear().unwrap();
    w.commit().unwrap();
    let r = db.read().unwrap();
    assert!(r.table("log").unwrap().is_empty());
    assert_eq!(r.table("log").unwrap().first().unwrap(), None);
}
