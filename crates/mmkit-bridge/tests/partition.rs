//! Publishes delivered late: a proxy between the mirror and the server
//! cuts the mirror off mid-stream, holds back what the mirror had sent,
//! lets it reconnect and carry on, and only then hands the held bytes to
//! the server, longer after than the duplicate window. Message ids no
//! longer drop those re-sends; the expected-sequence chain must.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mmkit_bridge::{MirrorOut, StreamOptions};

/// One proxied connection.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Set once the connection is cut: client bytes are held.
    cut: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<u8>>>,
}

/// A TCP proxy to the server that can cut its connections.
struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<Conn>>>,
    /// Client bytes passed on to the server so far, over all connections.
    forwarded: Arc<AtomicU64>,
}

impl Proxy {
    fn start(server_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let list = conns.clone();
        let forwarded: Arc<AtomicU64> = Arc::default();
        let total = forwarded.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let upstream = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
                let cut = Arc::new(AtomicBool::new(false));
                let held: Arc<Mutex<Vec<u8>>> = Arc::default();
                let (c2, u2, cut2, held2) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap(), cut.clone(), held.clone());
                let total = total.clone();
                std::thread::spawn(move || pump(c2, u2, &cut2, Some((&held2, &total))));
                // Server bytes (acks) keep flowing until the shutdown, so a
                // mirror whose window was full at the cut gets slots back
                // and sends more into the void.
                let (c3, u3) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || pump(u3, c3, &AtomicBool::new(false), None));
                list.lock().unwrap().push(Conn { client, upstream, cut, held });
            }
        });
        Proxy { port, conns, forwarded }
    }

    /// Waits until the client has sent `bytes` more than `since` through
    /// the proxy (the mirror is connected and publishing), up to 20 s.
    fn wait_forwarded(&self, since: u64, bytes: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.forwarded.load(Ordering::SeqCst) < since + bytes {
            assert!(std::time::Instant::now() < deadline, "the mirror publishes nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Cuts every connection: the client sees it close; what it had sent
    /// and the server had not read yet is held.
    fn cut(&self) -> Vec<Conn> {
        let conns: Vec<Conn> = self.conns.lock().unwrap().drain(..).collect();
        for c in &conns {
            c.cut.store(true, Ordering::SeqCst);
        }
        // Let the client send a window's worth into the void first.
        std::thread::sleep(Duration::from_millis(50));
        for c in &conns {
            let _ = c.client.shutdown(Shutdown::Both);
        }
        conns
    }
}

/// Copies `from` to `to` until EOF, counting into `hold`'s counter; once
/// `cut`, into `hold`'s buffer.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    cut: &AtomicBool,
    hold: Option<(&Mutex<Vec<u8>>, &AtomicU64)>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !cut.load(Ordering::SeqCst) {
            if to.write_all(&buf[..n]).is_err() {
                return;
            }
            if let Some((_, total)) = hold {
                total.fetch_add(n as u64, Ordering::SeqCst);
            }
        } else if let Some((h, _)) = hold {
            h.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    }
}

#[test]
fn publishes_delivered_after_the_duplicate_window_are_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = server(dir.path()) else { return };
    let proxy = Proxy::start(srv.port());
    let via_proxy = format!("nats://127.0.0.1:{}", proxy.port);
    let a = queue(&dir.path().join("a"));
    let mut opts = out_opts(&via_proxy, "LATE");
    opts.once = false;
    opts.max_in_flight = 256;
    opts.ack_timeout = Duration::from_millis(500);
    opts.create =
        Some(StreamOptions { duplicate_window: Duration::from_millis(100), ..StreamOptions::default() });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut mirror = MirrorOut::new(a.clone(), opts).unwrap();
    let runner = std::thread::spawn(move || {
        let stop = async {
            let _ = stop_rx.await;
        };
        mmkit_bridge::block_on(mirror.run(stop, &mut |_| {})).unwrap()
    });
    let mut held_bytes = 0;
    for round in 0..3 {
        let before = proxy.forwarded.load(Ordering::SeqCst);
        fill(&a, "a", round * 10_000..(round + 1) * 10_000);
        // Mid-stream (the mirror has sent a few publishes of this round,
        // however long it took to connect): cut it off, holding what it
        // sends meanwhile. A fixed sleep here missed the stream on a slow
        // start, or let it finish first.
        proxy.wait_forwarded(before, 4_000);
        let cut = proxy.cut();
        std::thread::sleep(Duration::from_millis(400));
        // It has reconnected and gone on; now the old bytes arrive, well
        // after the duplicate window.
        for mut c in cut {
            let held = std::mem::take(&mut *c.held.lock().unwrap());
            held_bytes += held.len();
            let _ = c.upstream.write_all(&held);
            std::thread::sleep(Duration::from_millis(100));
            let _ = c.upstream.shutdown(Shutdown::Both);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).unwrap();
    runner.join().unwrap().unwrap();
    assert!(held_bytes > 0, "the cuts should have caught publishes in flight");
    // Finish directly, then compare.
    mirror_out(&a, out_opts(&srv.url(), "LATE")).0.unwrap();
    assert_stream_is_queue(&read_stream(&srv.url(), "LATE", None), &a);
}
