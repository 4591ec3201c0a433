//! Connecting with backoff, and what the connection tells us on the side
//! (disconnections, permission violations).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;

use crate::Event;
use crate::error::{Error, Result};

/// Connection events, shared with the client's event callback.
#[derive(Debug)]
pub(crate) struct Events {
    /// Counts disconnections and permission violations: whoever waits on an
    /// answer that may never come watches it.
    alarms: watch::Sender<u64>,
    /// The last permissions violation the server reported.
    denied: Mutex<Option<String>>,
}

impl Default for Events {
    fn default() -> Self {
        Events { alarms: watch::Sender::new(0), denied: Mutex::new(None) }
    }
}

impl Events {
    fn on(&self, event: async_nats::Event) {
        match event {
            async_nats::Event::Disconnected => self.alarms.send_modify(|n| *n += 1),
            async_nats::Event::ServerError(e) => {
                let text = e.to_string();
                let lower = text.to_ascii_lowercase();
                if lower.contains("permissions violation") || lower.contains("authorization violation") {
                    *self.denied.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
                    self.alarms.send_modify(|n| *n += 1);
                }
            }
            _ => {}
        }
    }

    /// A receiver that sees every later disconnection or violation.
    pub(crate) fn alarms(&self) -> watch::Receiver<u64> {
        self.alarms.subscribe()
    }

    /// The server's last permissions violation, if any.
    pub(crate) fn denied(&self) -> Option<String> {
        self.denied.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A client, its JetStream context and its events.
pub(crate) struct Connection {
    pub(crate) url: String,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) events: Arc<Events>,
}

impl Connection {
    /// A permanent error if the server reported a permissions violation,
    /// else `err` as it is.
    pub(crate) fn explain(&self, err: Error) -> Error {
        match self.events.denied() {
            Some(detail) => Error::PermissionDenied { url: self.url.clone(), detail },
            None => err,
        }
    }

    /// The server's `max_payload`.
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}

/// Exponential backoff: 100 ms doubling to 5 s, with jitter so that many
/// mirrors restarted together do not reconnect in lock-step.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base =
            Duration::from_millis(100).saturating_mul(1 << self.attempt.min(6)).min(Duration::from_secs(5));
        self.attempt = self.attempt.saturating_add(1);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // 75% to 125% of the base.
        let jitter = 0.75 + (nanos.subsec_nanos() % 1000) as f64 / 2000.0;
        base.mul_f64(jitter)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How the client reconnects by itself after a connection was established.
fn reconnect_delay(attempts: usize) -> Duration {
    Duration::from_millis(50).saturating_mul(1 << attempts.min(7)).min(Duration::from_secs(5))
}

/// Connects to `url`, retrying with backoff while the server cannot be
/// reached (it may be restarting); wrong credentials or a bad URL are
/// permanent. `ack_timeout` bounds API requests and publish acks.
pub(crate) async fn connect(
    url: &str,
    name: &str,
    ack_timeout: Duration,
    report: &mut dyn FnMut(Event),
) -> Result<Connection> {
    let mut backoff = Backoff::default();
    loop {
        let events = Arc::new(Events::default());
        let cb_events = events.clone();
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(ack_timeout))
            .client_capacity(16 * 1024)
            .event_callback(move |e| {
                cb_events.on(e);
                async {}
            });
        match options.connect(url).await {
            Ok(client) => {
                let js = jetstream::ContextBuilder::new()
                    .timeout(ack_timeout)
                    .max_ack_inflight(1 << 16)
                    .backpressure_on_inflight(true)
                    .build(client.clone());
                report(Event::Connected { url: url.to_string() });
                return Ok(Connection { url: url.to_string(), client, js, events });
            }
            Err(e) => {
                use async_nats::ConnectErrorKind as K;
                let permanent = matches!(
                    e.kind(),
                    K::ServerParse | K::Authentication | K::AuthorizationViolation | K::Tls
                );
                if permanent {
                    return Err(Error::Connect { url: url.to_string(), detail: e.to_string() });
                }
                let delay = backoff.next_delay();
                report(Event::Retrying { error: format!("connecting to {url}: {e}"), delay });
                tokio::time::sleep(delay).await;
            }
        }
    }
}
