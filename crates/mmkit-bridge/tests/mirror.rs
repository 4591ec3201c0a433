//! Mirroring against a real `nats-server -js` (started per test on a random
//! port, killed at the end): round trips, restarts, shared streams,
//! oversized messages, outages longer than the duplicate window, foreign
//! publishers, two-way mirrors, permissions.

mod common;

use std::time::Duration;

use common::*;
use mmkit_bridge::{Error, Event, MirrorIn, MirrorOut, Origin, StreamOptions};
use mmkit_queue::Queue;

#[test]
fn round_trip_then_incremental_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let a = queue(&dir.path().join("a"));
    fill(&a, "a", 0..3000);
    let (sent, events) = mirror_out(&a, out_opts(&srv.url(), "RT"));
    let sent = sent.unwrap();
    assert_eq!(sent.messages, 3000);
    assert!(events.contains(&Event::StreamCreated { stream: "RT".into() }));
    assert!(events.iter().any(|e| matches!(e, Event::Resynced { pipelined: true, .. })), "{events:?}");
    let stored = read_stream(&srv.url(), "RT", None);
    assert_stream_is_queue(&stored, &a);
    // The cursor is committed at the end: retention may drop everything.
    let cursors = a.cursors().unwrap();
    let c = cursors.iter().find(|c| c.name == "nats-RT").unwrap();
    assert_eq!((c.position, c.lag), (a.end_index().unwrap(), 0));

    let b = queue(&dir.path().join("b"));
    let (got, _) = mirror_in(&b, in_opts(&srv.url(), "RT", None));
    assert_eq!(got.unwrap().messages, 3000);
    assert_eq!(payloads(&b), payloads(&a));
    // Each record carries its stream sequence and origin, in the same append.
    for ((index, _, _), (_, _, meta)) in records(&a).iter().zip(records(&b)) {
        let o = Origin::decode(&meta).unwrap().unwrap();
        let first = o.first.unwrap();
        assert_eq!((first.queue_id, first.index), (a.id(), *index));
        assert_eq!(stored.iter().find(|s| s.seq == o.stream_seq).unwrap().publisher, Some((a.id(), *index)));
    }

    // More messages, and mirrors run again: each resumes where it stopped.
    fill(&a, "a", 3000..3500);
    assert_eq!(mirror_out(&a, out_opts(&srv.url(), "RT")).0.unwrap().messages, 500);
    assert_eq!(mirror_out(&a, out_opts(&srv.url(), "RT")).0.unwrap().messages, 0);
    assert_eq!(mirror_in(&b, in_opts(&srv.url(), "RT", None)).0.unwrap().messages, 500);
    assert_eq!(mirror_in(&b, in_opts(&srv.url(), "RT", None)).0.unwrap().messages, 0);
    assert_eq!(payloads(&b), payloads(&a));
    assert_eq!(stream_messages(&srv.url(), "RT"), 3500);
}

#[test]
fn shared_stream_with_other_subjects_and_queues() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let url = srv.url();
    create_stream(&url, "SHARED", &["shared.>"]);
    publish_plain(&url, "shared.other", &plain("noise", 50));
    let (a, c) = (queue(&dir.path().join("a")), queue(&dir.path().join("c")));
    fill(&a, "a", 0..400);
    fill(&c, "c", 0..300);
    // Two queues mirrored at once, while someone else keeps publishing.
    let noisy = {
        let url = url.clone();
        std::thread::spawn(move || {
            for i in 0..20 {
                publish_plain(&url, "shared.other", &[format!("during {i}").into_bytes()]);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let opts = |subject: &str| {
        let mut o = out_opts(&url, "SHARED");
        o.subject = Some(subject.into());
        o
    };
    let (ra, rc) = std::thread::scope(|s| {
        let ha = s.spawn(|| mirror_out(&a, opts("shared.a")));
        let hc = s.spawn(|| mirror_out(&c, opts("shared.c")));
        (ha.join().unwrap(), hc.join().unwrap())
    });
    noisy.join().unwrap();
    assert_eq!(ra.0.unwrap().messages, 400);
    assert_eq!(rc.0.unwrap().messages, 300);
    // A stream shared with other subjects is published one at a time.
    assert!(ra.1.iter().any(|e| matches!(e, Event::Resynced { pipelined: false, .. })));
    assert_stream_is_queue(&read_stream(&url, "SHARED", Some("shared.a")), &a);
    assert_stream_is_queue(&read_stream(&url, "SHARED", Some("shared.c")), &c);
    assert_eq!(read_stream(&url, "SHARED", Some("shared.other")).len(), 70);

    // Mirror-in of one subject of the shared stream.
    let b = queue(&dir.path().join("b"));
    assert_eq!(mirror_in(&b, in_opts(&url, "SHARED", Some("shared.a"))).0.unwrap().messages, 400);
    assert_eq!(payloads(&b), payloads(&a));

    // A subject the stream does not take is a clear, permanent error.
    let err = mirror_out(&a, opts("elsewhere")).0.unwrap_err();
    assert!(matches!(err, Error::StreamUnusable { .. }) && err.is_permanent(), "{err}");
    assert!(err.to_string().contains("does not take subject elsewhere"), "{err}");
}

#[test]
fn oversized_messages_stop_the_mirror_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server_with(dir.path(), "max_payload: 8192\n") else { return };
    let url = srv.url();
    let a = queue(&dir.path().join("a"));
    let mut p = a.producer().unwrap();
    let small = p.append(b"small 1").unwrap();
    p.append(b"small 2").unwrap();
    let big = p.append(&vec![7u8; 20_000]).unwrap();
    p.append(b"small 3").unwrap();
    let err = mirror_out(&a, out_opts(&url, "BIG")).0.unwrap_err();
    match &err {
        Error::MessageTooLarge { what, limit, .. } => {
            assert!(what.contains(&format!("index {big}")), "{err}");
            assert_eq!(*limit, 8192);
        }
        other => panic!("expected MessageTooLarge, got {other}"),
    }
    assert!(err.is_permanent());
    assert!(err.to_string().contains("not split into chunks"), "{err}");
    // What came before is in the stream, and the cursor stops before it.
    let stored = read_stream(&url, "BIG", None);
    assert_eq!(
        stored.iter().map(|s| s.payload.clone()).collect::<Vec<_>>(),
        [b"small 1".to_vec(), b"small 2".to_vec()]
    );
    assert_eq!(a.cursors().unwrap()[0].position, big);
    assert!(big > small);

    let mut skip = out_opts(&url, "BIG");
    skip.skip_oversized = true;
    let (sent, events) = mirror_out(&a, skip);
    let sent = sent.unwrap();
    assert_eq!((sent.messages, sent.skipped), (1, 1));
    assert!(
        events.iter().any(|e| matches!(e, Event::Skipped { what, .. } if what == &format!("index {big}")))
    );
    assert_eq!(read_stream(&url, "BIG", None).len(), 3);

    // Mirror-in into a queue whose messages are smaller than the stream's.
    publish_plain(&url, "BIG", &[vec![1u8; 3000]]);
    let tiny = Queue::options()
        .create(true)
        .segment_size(64 << 10)
        .max_message_size(1024)
        .open(dir.path().join("t"))
        .unwrap();
    let err = mirror_in(&tiny, in_opts(&url, "BIG", None)).0.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("stream sequence 4"), "{err}");
    assert_eq!(payloads(&tiny).len(), 3, "what came before it was appended");
    let mut skip_in = in_opts(&url, "BIG", None);
    skip_in.skip_oversized = true;
    let got = mirror_in(&tiny, skip_in).0.unwrap();
    assert_eq!((got.messages, got.skipped), (0, 1));
}

/// Pipelined publishes ask for an acknowledgement once in a group; a
/// skipped record in the middle of a burst must not let the cursor pass
/// publishes whose acknowledgement has not come (the publish before a skip
/// asks for its own).
#[test]
fn pipelined_bursts_with_skipped_records_in_between() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server_with(dir.path(), "max_payload: 8192\n") else { return };
    let url = srv.url();
    let a = queue(&dir.path().join("a"));
    let mut p = a.producer().unwrap();
    let mut small = 0;
    for (i, run) in [1usize, 200, 63, 64, 65, 1, 2, 300].iter().enumerate() {
        for k in 0..*run {
            p.append(format!("small {i}.{k}").as_bytes()).unwrap();
            small += 1;
        }
        p.append(&vec![7u8; 20_000]).unwrap();
    }
    drop(p);
    let mut opts = out_opts(&url, "BURSTS");
    opts.skip_oversized = true;
    opts.max_in_flight = 100;
    let sent = mirror_out(&a, opts).0.unwrap();
    assert_eq!((sent.messages, sent.skipped), (small, 8));
    assert_eq!(a.cursors().unwrap()[0].position, a.end_index().unwrap());
    let stored = read_stream(&url, "BURSTS", None);
    assert_eq!(stored.len() as u64, small);
    let local: Vec<Vec<u8>> = payloads(&a).into_iter().filter(|m| m.len() < 20_000).collect();
    assert_eq!(stored.iter().map(|s| s.payload.clone()).collect::<Vec<_>>(), local);
}

#[test]
fn outage_longer_than_the_duplicate_window() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut srv) = server(dir.path()) else { return };
    let url = srv.url();
    let a = queue(&dir.path().join("a"));
    fill(&a, "a", 0..200);
    let mut opts = out_opts(&url, "WIN");
    opts.create =
        Some(StreamOptions { duplicate_window: Duration::from_millis(300), ..StreamOptions::default() });
    assert_eq!(mirror_out(&a, opts.clone()).0.unwrap().messages, 200);

    // As if the mirror died after the acks came and before it committed:
    // the cursor is far behind what the stream holds.
    let mut cursor = a.cursor("nats-WIN").unwrap();
    cursor.seek(a.first_index().unwrap()).unwrap();
    cursor.commit().unwrap();
    drop(cursor);
    // The server goes away for longer than the duplicate window, so
    // message ids no longer protect against a re-send.
    srv.kill();
    std::thread::sleep(Duration::from_millis(600));
    srv.restart().unwrap();
    fill(&a, "a", 200..250);
    let (sent, events) = mirror_out(&a, opts);
    assert_eq!(sent.unwrap().messages, 50, "only the new messages: {events:?}");
    let stored = read_stream(&url, "WIN", None);
    assert_stream_is_queue(&stored, &a);
    assert_eq!(stream_messages(&url, "WIN"), 250);
}

#[test]
fn someone_elses_messages_on_the_subject_stop_the_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let url = srv.url();
    let a = queue(&dir.path().join("a"));
    fill(&a, "a", 0..10);

    // A missing stream, without --create-stream.
    let mut no_create = out_opts(&url, "ORDERS");
    no_create.create = None;
    let err = mirror_out(&a, no_create).0.unwrap_err();
    assert!(matches!(err, Error::StreamMissing { .. }) && err.is_permanent(), "{err}");
    assert!(err.to_string().contains("--create-stream"), "{err}");
    let err = mirror_in(&a, in_opts(&url, "ORDERS", None)).0.unwrap_err();
    assert!(matches!(err, Error::StreamMissing { .. }), "{err}");

    create_stream(&url, "ORDERS", &["ORDERS"]);
    publish_plain(&url, "ORDERS", &[b"not from a queue".to_vec()]);
    let err = mirror_out(&a, out_opts(&url, "ORDERS")).0.unwrap_err();
    assert!(matches!(err, Error::ForeignSubject { .. }) && err.is_permanent(), "{err}");

    // Another queue's messages on the subject.
    let other = queue(&dir.path().join("o"));
    fill(&other, "o", 0..3);
    let mut opts = out_opts(&url, "OTHER");
    opts.subject = Some("other".into());
    mirror_out(&other, opts.clone()).0.unwrap();
    let err = mirror_out(&a, opts).0.unwrap_err();
    assert!(err.to_string().contains("comes from queue"), "{err}");
    assert_eq!(read_stream(&url, "OTHER", None).len(), 3);
}

#[test]
fn two_way_mirror_does_not_loop() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let url = srv.url();
    create_stream(&url, "LOOP", &["loop.*"]);
    let (a, b) = (queue(&dir.path().join("a")), queue(&dir.path().join("b")));
    fill(&a, "a", 0..20);
    fill(&b, "b", 0..30);
    let out = |subject: &str, forward: bool| {
        let mut o = out_opts(&url, "LOOP");
        o.subject = Some(subject.into());
        o.include_mirrored = forward;
        o
    };
    for _ in 0..3 {
        mirror_out(&a, out("loop.a", false)).0.unwrap();
        mirror_out(&b, out("loop.b", false)).0.unwrap();
        mirror_in(&a, in_opts(&url, "LOOP", Some("loop.b"))).0.unwrap();
        mirror_in(&b, in_opts(&url, "LOOP", Some("loop.a"))).0.unwrap();
    }
    assert_eq!((payloads(&a).len(), payloads(&b).len()), (50, 50));
    assert_eq!(stream_messages(&url, "LOOP"), 50);

    // B forwards what it mirrored in: A's messages come back to A on
    // loop.b with A's id as their origin, and A drops them. (B's cursor is
    // past them, but the stream does not hold them, so they go.)
    let fwd = mirror_out(&b, out("loop.b", true)).0.unwrap();
    assert_eq!((fwd.messages, fwd.skipped), (20, 0));
    let got = mirror_in(&a, in_opts(&url, "LOOP", Some("loop.b"))).0.unwrap();
    assert_eq!((got.messages, got.skipped), (0, 20));
    assert_eq!(payloads(&a).len(), 50);
    let forwarded = read_stream(&url, "LOOP", Some("loop.b"));
    assert_eq!(forwarded.len(), 50);
}

#[test]
fn one_mirror_per_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let a = queue(&dir.path().join("a"));
    let first = MirrorOut::new(a.clone(), out_opts("nats://127.0.0.1:1", "S")).unwrap();
    let err = MirrorOut::new(a.clone(), out_opts("nats://127.0.0.1:1", "S")).unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    assert!(err.to_string().contains("mirror-out cursor nats-S"), "{err}");
    drop(first);
    MirrorOut::new(a, out_opts("nats://127.0.0.1:1", "S")).unwrap();
}

#[test]
fn permission_denied_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
authorization {
  users = [
    { user: admin, password: pw }
    { user: ro, password: pw, permissions: { publish: { allow: ["$JS.API.>", "_INBOX.>"] }, subscribe: { allow: ["_INBOX.>"] } } }
  ]
}
"#;
    let Some(srv) = server_with(dir.path(), config) else { return };
    let admin = format!("nats://admin:pw@127.0.0.1:{}", srv.port());
    create_stream(&admin, "P", &["P"]);
    let a = queue(&dir.path().join("a"));
    fill(&a, "a", 0..5);
    let ro = format!("nats://ro:pw@127.0.0.1:{}", srv.port());
    let err = mirror_out(&a, out_opts(&ro, "P")).0.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }) && err.is_permanent(), "{err}");
    assert!(err.to_string().to_lowercase().contains("permissions violation"), "{err}");
    let bad = format!("nats://admin:wrong@127.0.0.1:{}", srv.port());
    let err = mirror_out(&a, out_opts(&bad, "P")).0.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }) && err.is_permanent(), "{err}");
    assert_eq!(a.cursors().unwrap()[0].position, a.first_index().unwrap());
}

#[test]
fn messages_the_stream_lost_are_published_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut srv) = server(dir.path()) else { return };
    let url = srv.url();
    let a = queue(&dir.path().join("a"));
    fill(&a, "a", 0..100);
    assert_eq!(mirror_out(&a, out_opts(&url, "LOST")).0.unwrap().messages, 100);
    // The machine crashes before the server's last writes reach the disk
    // (nats-server 2.9 acknowledges before it syncs): the tail of the
    // stream's block file is gone when it restarts.
    srv.kill();
    let msgs = dir.path().join("nats/store/jetstream/$G/streams/LOST/msgs");
    let blk = msgs.join("1.blk");
    let len = std::fs::metadata(&blk).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&blk).unwrap().set_len(len * 85 / 100).unwrap();
    for index in ["1.idx", "1.fss"] {
        let _ = std::fs::remove_file(msgs.join(index));
    }
    srv.restart().unwrap();
    let left = stream_messages(&url, "LOST");
    assert!((50..100).contains(&left), "{left} messages left");
    let (sent, events) = mirror_out(&a, out_opts(&url, "LOST"));
    assert_eq!(sent.unwrap().messages, 100 - left, "{events:?}");
    assert_stream_is_queue(&read_stream(&url, "LOST", None), &a);
    assert_eq!(a.cursors().unwrap()[0].lag, 0);
}

#[test]
fn mirror_in_refuses_a_stream_that_was_deleted_and_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let url = srv.url();
    let a = queue(&dir.path().join("a"));
    fill(&a, "a", 0..100);
    assert_eq!(mirror_out(&a, out_opts(&url, "RC")).0.unwrap().messages, 100);
    let b = queue(&dir.path().join("b"));
    assert_eq!(mirror_in(&b, in_opts(&url, "RC", None)).0.unwrap().messages, 100);
    // Deleted; mirror-out creates it again and publishes from its cursor,
    // so the new stream numbers these 300 messages 1 to 300: past the old
    // stream's 100, so only the stream's identity tells them apart.
    delete_stream(&url, "RC");
    fill(&a, "a", 100..400);
    assert_eq!(mirror_out(&a, out_opts(&url, "RC")).0.unwrap().messages, 300);
    match mirror_in(&b, in_opts(&url, "RC", None)).0 {
        Err(Error::StreamReset { last_seq: 100, stream_last: 300, .. }) => {}
        other => panic!("expected StreamReset, got {other:?}"),
    }
    assert_eq!(payloads(&b).len(), 100, "nothing appended");
}

#[test]
fn mirror_in_resumes_where_it_was_after_retention_deleted_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let url = srv.url();
    let a = queue(&dir.path().join("a"));
    fill(&a, "a", 0..10);
    assert_eq!(mirror_out(&a, out_opts(&url, "RET")).0.unwrap().messages, 10);
    let b = queue(&dir.path().join("b"));
    assert_eq!(mirror_in(&b, in_opts(&url, "RET", None)).0.unwrap().messages, 10);
    // Another producer fills several segments, and retention deletes the
    // segment that held the mirror's records.
    fill(&b, "local", 0..3000);
    b.apply_retention(&mmkit_queue::Retention { max_total_bytes: Some(512 << 10), ..Default::default() })
        .unwrap();
    assert!(records(&b).iter().all(|(_, p, _)| p.starts_with(b"local")), "the mirror's records are gone");
    assert_eq!(mirror_in(&b, in_opts(&url, "RET", None)).0.unwrap().messages, 0);
    fill(&a, "a", 10..15);
    assert_eq!(mirror_out(&a, out_opts(&url, "RET")).0.unwrap().messages, 5);
    assert_eq!(mirror_in(&b, in_opts(&url, "RET", None)).0.unwrap().messages, 5);
}

/// Queue `b`, holding the 15 messages of stream `stream` (mirrored out of
/// queue `a`), and the path of its resume marker.
fn mirrored_with_marker(dir: &std::path::Path, url: &str, stream: &str) -> (Queue, std::path::PathBuf) {
    let a = queue(&dir.join("a"));
    fill(&a, "a", 0..15);
    assert_eq!(mirror_out(&a, out_opts(url, stream)).0.unwrap().messages, 15);
    let b = queue(&dir.join("b"));
    assert_eq!(mirror_in(&b, in_opts(url, stream, None)).0.unwrap().messages, 15);
    let marker = std::fs::read_dir(b.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pos"))
        .expect("a resume marker");
    (b, marker)
}

#[test]
fn mirror_in_trusts_its_records_over_a_marker_ahead_of_them() {
    // As after a machine crash that kept the marker but lost the queue's
    // last appends: the records say where to resume, and the stream
    // provides what is missing.
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let (b, marker) = mirrored_with_marker(dir.path(), &srv.url(), "AHEAD");
    // A second queue holding the first 10 records, given b's marker (15).
    let c = queue_with_marker(&dir.path().join("c"), &marker);
    let mut p = c.producer().unwrap();
    for (_, payload, meta) in records(&b).into_iter().take(10) {
        p.append_with_meta(&meta, &payload).unwrap();
    }
    drop(p);
    assert_eq!(mirror_in(&c, in_opts(&srv.url(), "AHEAD", None)).0.unwrap().messages, 5);
    assert_eq!(payloads(&c), payloads(&b));
}

#[test]
fn mirror_in_ignores_a_marker_whose_records_the_queue_lost() {
    // A machine crash can keep the (unsynced) marker and lose every record
    // it names: they were not deleted by retention (their index is not below
    // the queue's first), so the mirror fetches them again.
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let (b, marker) = mirrored_with_marker(dir.path(), &srv.url(), "LOST");
    let c = queue_with_marker(&dir.path().join("c"), &marker);
    assert_eq!(mirror_in(&c, in_opts(&srv.url(), "LOST", None)).0.unwrap().messages, 15);
    assert_eq!(payloads(&c), payloads(&b));
}

#[test]
fn a_stream_created_again_while_mirror_in_runs_stops_it() {
    // The ordered consumer recreates itself on the new stream from the old
    // stream's last sequence + 1; the mirror notices the new consumer and
    // checks the stream before appending anything from it.
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let url = srv.url();
    create_stream(&url, "LIVE", &["live.>"]);
    publish_plain(&url, "live.x", &plain("old", 100));
    let b = queue(&dir.path().join("b"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mirror = {
        let (b, url) = (b.clone(), url.clone());
        std::thread::spawn(move || {
            let mut m = mmkit_bridge::MirrorIn::new(b, mmkit_bridge::InOptions::new(&url, "LIVE")).unwrap();
            let stop = async {
                let _ = stop_rx.await;
            };
            mmkit_bridge::block_on(m.run(stop, &mut |_| {})).unwrap()
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while payloads(&b).len() < 100 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(payloads(&b).len(), 100);
    delete_stream(&url, "LIVE");
    create_stream(&url, "LIVE", &["live.>"]);
    publish_plain(&url, "live.x", &plain("new", 150));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !mirror.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stop_tx.send(());
    let result = mirror.join().unwrap();
    assert!(matches!(result, Err(Error::StreamReset { .. })), "{result:?}");
    assert_eq!(payloads(&b).len(), 100, "nothing appended from the new stream");
}

#[test]
fn a_server_restart_is_not_a_new_stream() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut srv) = server(dir.path()) else { return };
    let url = srv.url();
    create_stream(&url, "RS", &["rs.>"]);
    publish_plain(&url, "rs.x", &plain("m", 10));
    let b = queue(&dir.path().join("b"));
    assert_eq!(mirror_in(&b, in_opts(&url, "RS", None)).0.unwrap().messages, 10);
    srv.kill();
    std::thread::sleep(Duration::from_millis(500));
    srv.restart().unwrap();
    let url = srv.url();
    publish_plain(&url, "rs.x", &plain("n", 5));
    assert_eq!(mirror_in(&b, in_opts(&url, "RS", None)).0.unwrap().messages, 5);
}

#[test]
fn mirror_in_once_stops_at_what_the_stream_held_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let url = srv.url();
    create_stream(&url, "ONCE", &["once"]);
    let first = plain("before", 500);
    publish_plain(&url, "once", &first);
    // Once the mirror has looked at the stream (its first event), someone
    // publishes more before it reads a message: a one-shot mirror stops at
    // what the stream held when it started, however fast others publish.
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let (published, published_rx) = std::sync::mpsc::channel::<()>();
    let publisher = {
        let url = url.clone();
        std::thread::spawn(move || {
            if go_rx.recv().is_ok() {
                publish_plain(&url, "once", &plain("during", 2000));
            }
            let _ = published.send(());
        })
    };
    let q = queue(&dir.path().join("q"));
    let mut signalled = false;
    let mut on_event = |e: Event| {
        if !signalled && matches!(e, Event::Resynced { .. }) {
            signalled = true;
            go.send(()).unwrap();
            published_rx.recv().unwrap();
        }
    };
    let summary = MirrorIn::new(q.clone(), in_opts(&url, "ONCE", None))
        .and_then(|mut m| {
            mmkit_bridge::block_on(m.run(std::future::pending(), &mut on_event)).expect("runtime")
        })
        .unwrap();
    publisher.join().unwrap();
    assert!(signalled);
    assert_eq!(stream_messages(&url, "ONCE"), 2500);
    assert_eq!(summary.messages, 500);
    assert_eq!(payloads(&q), first, "the messages the stream held at the start, in order");
}
