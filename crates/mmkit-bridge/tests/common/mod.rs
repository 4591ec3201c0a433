//! Helpers of the bridge's tests: a real `nats-server -js` per test,
//! queues, one-shot mirrors, and reading a subject back from the stream.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use mmkit_bridge::{InOptions, LocalServer, MirrorIn, MirrorOut, OutOptions, StreamOptions, Summary};
use mmkit_queue::{Queue, Start};

/// A server in `dir`, or `None` (the test is skipped, with a note) when
/// nats-server is not installed and `MMKIT_TEST_NO_SKIP` is not set. CI
/// installs it and sets the variable.
pub fn server(dir: &Path) -> Option<LocalServer> {
    server_with(dir, "")
}

/// [`server`] with extra configuration.
pub fn server_with(dir: &Path, config: &str) -> Option<LocalServer> {
    if mmkit_bridge::nats_server_binary().is_none() && std::env::var_os("MMKIT_TEST_NO_SKIP").is_none() {
        eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
        return None;
    }
    Some(LocalServer::start_with_config(&dir.join("nats"), config).expect("start nats-server"))
}

/// A queue with small segments, so that mirrors cross segment boundaries.
pub fn queue(path: &Path) -> Queue {
    Queue::options().create(true).segment_size(256 << 10).open(path).expect("create queue")
}

/// Message `i` of a test run: a recognisable payload of varying length.
pub fn payload(tag: &str, i: u64) -> Vec<u8> {
    let mut p = format!("{tag}-{i:08}-").into_bytes();
    p.resize(p.len() + (i as usize * 37) % 700, b'a' + (i % 26) as u8);
    p
}

/// Appends `payload(tag, from..to)` in batches.
pub fn fill(q: &Queue, tag: &str, range: std::ops::Range<u64>) -> Vec<u64> {
    let mut producer = q.producer().expect("producer");
    let msgs: Vec<Vec<u8>> = range.map(|i| payload(tag, i)).collect();
    let mut out = Vec::new();
    for chunk in msgs.chunks(500) {
        let refs: Vec<&[u8]> = chunk.iter().map(|m| &m[..]).collect();
        out.extend(producer.append_batch(&refs).expect("append"));
    }
    out
}

/// Every record of a queue: (index, payload, metadata).
pub fn records(q: &Queue) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
    let mut r = q.reader(Start::Beginning).expect("reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next().expect("read") {
        out.push((rec.index(), rec.to_vec(), rec.meta().to_vec()));
    }
    out
}

/// Payloads of a queue, in order.
pub fn payloads(q: &Queue) -> Vec<Vec<u8>> {
    records(q).into_iter().map(|(_, p, _)| p).collect()
}

/// Options for a one-shot mirror-out that creates its stream.
pub fn out_opts(url: &str, stream: &str) -> OutOptions {
    let mut o = OutOptions::new(url, stream);
    o.create = Some(StreamOptions::default());
    o.once = true;
    o
}

/// Options for a one-shot mirror-in.
pub fn in_opts(url: &str, stream: &str, subject: Option<&str>) -> InOptions {
    let mut o = InOptions::new(url, stream);
    o.subject = subject.map(str::to_string);
    o.once = true;
    o
}

/// Runs a one-shot mirror-out, collecting its events.
pub fn mirror_out(q: &Queue, opts: OutOptions) -> (mmkit_bridge::Result<Summary>, Vec<mmkit_bridge::Event>) {
    let mut events = Vec::new();
    let r = MirrorOut::new(q.clone(), opts).and_then(|mut m| {
        mmkit_bridge::block_on(m.run(std::future::pending(), &mut |e| events.push(e))).expect("runtime")
    });
    (r, events)
}

/// Runs a one-shot mirror-in.
pub fn mirror_in(q: &Queue, opts: InOptions) -> (mmkit_bridge::Result<Summary>, Vec<mmkit_bridge::Event>) {
    let mut events = Vec::new();
    let r = MirrorIn::new(q.clone(), opts).and_then(|mut m| {
        mmkit_bridge::block_on(m.run(std::future::pending(), &mut |e| events.push(e))).expect("runtime")
    });
    (r, events)
}

/// A message read back from a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    /// The publishing queue's id and index, from the mmkit headers.
    pub publisher: Option<(u128, u64)>,
    pub payload: Vec<u8>,
}

/// Every message of `stream` (of the subjects `filter` takes), in order.
pub fn read_stream(url: &str, stream: &str, filter: Option<&str>) -> Vec<Stored> {
    mmkit_bridge::block_on(async {
        let client = mmkit_bridge::connect_options(url).connect(url).await.expect("connect");
        let js = jetstream::new(client);
        let s = js.get_stream(stream).await.expect("stream");
        let config =
            pull::OrderedConfig { filter_subject: filter.unwrap_or("").to_string(), ..Default::default() };
        let consumer = s.create_consumer(config).await.expect("consumer");
        let mut left = consumer.cached_info().num_pending;
        let mut msgs = consumer.messages().await.expect("messages");
        let mut out = Vec::new();
        while left > 0 {
            let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
                .await
                .expect("a message within 10 s")
                .expect("stream open")
                .expect("message");
            let info = m.info().expect("info");
            left = info.pending;
            out.push(Stored {
                seq: info.stream_sequence,
                subject: m.message.subject.to_string(),
                publisher: m.message.headers.as_ref().and_then(mmkit_bridge::headers::publisher),
                payload: m.message.payload.to_vec(),
            });
        }
        out
    })
    .expect("runtime")
}

/// The stream's message count.
pub fn stream_messages(url: &str, stream: &str) -> u64 {
    mmkit_bridge::block_on(async {
        let js = jetstream::new(mmkit_bridge::connect_options(url).connect(url).await.expect("connect"));
        let mut s = js.get_stream(stream).await.expect("stream");
        s.info().await.expect("info").state.messages
    })
    .expect("runtime")
}

/// Payloads `"<tag> <i>"` for `i` in `0..n`, to publish as plain messages.
pub fn plain(tag: &str, n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{tag} {i}").into_bytes()).collect()
}

/// Publishes plain messages (no mmkit headers) to `subject`.
pub fn publish_plain(url: &str, subject: &str, payloads: &[Vec<u8>]) {
    mmkit_bridge::block_on(async {
        let js = jetstream::new(mmkit_bridge::connect_options(url).connect(url).await.expect("connect"));
        for p in payloads {
            js.publish(subject.to_string(), p.clone().into()).await.expect("publish").await.expect("ack");
        }
    })
    .expect("runtime")
}

/// A new queue at `path` holding a copy of resume marker `marker` (as a
/// mirror-in into it would have left).
pub fn queue_with_marker(path: &Path, marker: &Path) -> Queue {
    let q = queue(path);
    std::fs::copy(marker, q.path().join(marker.file_name().expect("a marker file name")))
        .expect("copy marker");
    q
}

/// Deletes a stream.
pub fn delete_stream(url: &str, name: &str) {
    mmkit_bridge::block_on(async {
        let js = jetstream::new(mmkit_bridge::connect_options(url).connect(url).await.expect("connect"));
        js.delete_stream(name).await.expect("delete stream");
    })
    .expect("runtime")
}

/// Creates a stream over `subjects`.
pub fn create_stream(url: &str, name: &str, subjects: &[&str]) {
    mmkit_bridge::block_on(async {
        let js = jetstream::new(mmkit_bridge::connect_options(url).connect(url).await.expect("connect"));
        js.create_stream(jetstream::stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("create stream");
    })
    .expect("runtime")
}

/// Asserts that `stored` is exactly the records of `q` (that have no
/// mirror metadata), in order, published by `q`.
pub fn assert_stream_is_queue(stored: &[Stored], q: &Queue) {
    let local: Vec<(u64, Vec<u8>)> =
        records(q).into_iter().filter(|(_, _, m)| !m.starts_with(b"MMKB")).map(|(i, p, _)| (i, p)).collect();
    let got: Vec<(u64, Vec<u8>)> = stored
        .iter()
        .map(|s| {
            let (id, index) = s.publisher.expect("mmkit headers");
            assert_eq!(id, q.id(), "published by another queue");
            (index, s.payload.clone())
        })
        .collect();
    assert_eq!(got.len(), local.len(), "stream and queue hold different counts");
    for (k, (a, b)) in got.iter().zip(&local).enumerate() {
        assert_eq!(a, b, "message {k} differs (index in stream {}, in queue {})", a.0, b.0);
    }
    let mut seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), stored.len());
}

/// A small PRNG (xorshift), seeded from the clock; the seed is printed.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
