//! NATS JetStream with file storage, through Debian's `nats-server` and the
//! `nats` (sync) client crate.
//!
//! Publishing is with acknowledgement, pipelined as JetStream's own
//! PublishAsync does: up to [`WINDOW`] publishes in flight on one reply
//! inbox, every ack checked. Consumers are ordered push consumers
//! (ack none, deliver all). nats-server 2.9 acknowledges a publish once it
//! is in the stream's file (in the page cache): it does not fsync per
//! message (its `sync_interval` is minutes), so its "durable" ack is an
//! OS-managed one.

// The sync `nats` crate is deprecated in favour of async-nats + tokio; it is
// kept because it builds far lighter and speaks the same protocol.
#![allow(deprecated)]

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::proto::{MSG, Msg, Receiver, Sender, now_ns};

/// Publishes in flight before the producer waits for an ack.
pub const WINDOW: usize = 256;

/// A nats-server child on 127.0.0.1, killed on drop.
pub struct Server {
    child: Child,
    /// Its client port.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `nats-server -js` with its store in `dir`; `Ok(None)` when the
/// binary is not installed.
pub fn start(dir: &Path) -> io::Result<Option<Server>> {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "nats-server"]
        .into_iter()
        .find(|b| !b.starts_with('/') || Path::new(b).exists())
        .unwrap_or("nats-server");
    let port = free_port()?;
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(io::Error::other("nats-server did not start listening"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(server))
}

fn connect(port: u16) -> io::Result<nats::Connection> {
    nats::connect(format!("nats://127.0.0.1:{port}").as_str())
}

/// Creates a file-storage stream `name` over subject `name.x`.
pub fn create_stream(port: u16, name: &str) -> io::Result<()> {
    let js = nats::jetstream::new(connect(port)?);
    js.add_stream(nats::jetstream::StreamConfig {
        name: name.to_string(),
        subjects: vec![format!("{name}.x")],
        storage: nats::jetstream::StorageType::File,
        ..Default::default()
    })?;
    Ok(())
}

/// A pipelined publisher with acks.
pub struct JsSender {
    nc: nats::Connection,
    subject: String,
    inbox: String,
    acks: nats::Subscription,
    in_flight: VecDeque<u64>,
    /// Publish-to-ack latencies, when recorded.
    pub ack_latency: Option<Vec<u64>>,
}

/// Connects a publisher to stream `name`.
pub fn sender(port: u16, name: &str) -> io::Result<JsSender> {
    let nc = connect(port)?;
    let inbox = nc.new_inbox();
    let acks = nc.subscribe(&inbox)?;
    Ok(JsSender {
        nc,
        subject: format!("{name}.x"),
        inbox,
        acks,
        in_flight: VecDeque::new(),
        ack_latency: None,
    })
}

impl JsSender {
    fn wait_ack(&mut self) -> io::Result<()> {
        let reply = self.acks.next_timeout(Duration::from_secs(10))?;
        let sent = self.in_flight.pop_front().unwrap_or(0);
        if let Some(lat) = &mut self.ack_latency {
            lat.push(now_ns().saturating_sub(sent));
        }
        let ack: serde_json::Value = serde_json::from_slice(&reply.data).map_err(io::Error::other)?;
        if ack.get("seq").is_none() {
            return Err(io::Error::other(format!("JetStream refused a publish: {ack}")));
        }
        Ok(())
    }
}

impl Sender for JsSender {
    fn send(&mut self, m: &Msg) -> io::Result<()> {
        if self.in_flight.len() >= WINDOW {
            self.wait_ack()?;
        }
        self.in_flight.push_back(now_ns());
        self.nc.publish_request(&self.subject, &self.inbox, m)
    }

    /// Waits for every outstanding ack; publishes are flushed by the client.
    fn flush(&mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.wait_ack()?;
        }
        Ok(())
    }
}

/// An ordered push consumer of stream `name` from its start.
pub struct JsReceiver {
    sub: nats::jetstream::PushSubscription,
    _js: nats::jetstream::JetStream,
}

/// Subscribes an ordered consumer to stream `name`.
pub fn receiver(port: u16, name: &str) -> io::Result<JsReceiver> {
    let js = nats::jetstream::new(connect(port)?);
    let opts = nats::jetstream::SubscribeOptions::ordered().deliver_all();
    let sub = js.subscribe_with_options(&format!("{name}.x"), &opts)?;
    Ok(JsReceiver { sub, _js: js })
}

impl Receiver for JsReceiver {
    fn recv(&mut self, out: &mut Msg) -> io::Result<()> {
        loop {
            let m = self.sub.next().ok_or_else(|| io::Error::other("NATS subscription closed"))?;
            if m.data.len() == MSG {
                out.copy_from_slice(&m.data);
                return Ok(());
            }
        }
    }
}

/// Durable publishing for `secs`: (messages, elapsed ns, ack latencies).
pub fn durable(port: u16, name: &str, secs: f64) -> io::Result<(u64, u64, Vec<u64>)> {
    let mut s = sender(port, name)?;
    s.ack_latency = Some(Vec::new());
    let start = now_ns();
    let mut count = 0u64;
    while now_ns() - start < (secs * 1e9) as u64 {
        for _ in 0..64 {
            s.send(&super::proto::encode(count, 0, 0))?;
            count += 1;
        }
    }
    s.flush()?;
    let elapsed = now_ns() - start;
    Ok((count, elapsed, s.ack_latency.take().unwrap_or_default()))
}
