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

/// Client options for `url` carrying the credentials the URL may hold
/// (`nats://user:password@host:4222`, or `nats://token@host:4222`), which
/// the client does not take from the URL by itself. Several servers may be
/// given separated by commas; the first with credentials sets them.
pub fn connect_options(url: &str) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new();
    let with_user = url
        .split(',')
        .filter_map(|u| u.trim().parse::<async_nats::ServerAddr>().ok())
        .find(|a| a.has_user_pass());
    let Some(addr) = with_user else { return options };
    let user = percent_decode(addr.username().unwrap_or(""));
    match addr.password() {
        Some(pass) => options.user_and_password(user, percent_decode(pass)),
        None => options.token(user),
    }
}

/// `url` with its password or token hidden, for messages and logs.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &u[scheme + 3..at];
                let user = creds.split_once(':').map_or("***", |(user, _)| user);
                format!("{}{user}:***{}", &u[..scheme + 3], &u[at..])
            }
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes `%XX` escapes (URL user info is percent-encoded).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        let options = connect_options(url)
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
                report(Event::Connected { url: redact(url) });
                return Ok(Connection { url: redact(url), client, js, events });
            }
            Err(e) => {
                use async_nats::ConnectErrorKind as K;
                let permanent = matches!(
                    e.kind(),
                    K::ServerParse | K::Authentication | K::AuthorizationViolation | K::Tls
                );
                if permanent {
                    return Err(Error::Connect { url: redact(url), detail: e.to_string() });
                }
                let delay = backoff.next_delay();
                report(Event::Retrying { error: format!("connecting to {}: {e}", redact(url)), delay });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden() {
        assert_eq!(redact("nats://admin:s3cret@host:4222"), "nats://admin:***@host:4222");
        assert_eq!(redact("nats://tok@host"), "nats://***:***@host");
        assert_eq!(redact("nats://host:4222,tls://u:p@h2"), "nats://host:4222,tls://u:***@h2");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(percent_decode("p%40ss%zz"), "p@ss%zz");
    }
}
