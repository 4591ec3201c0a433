//! `mmkit queue mirror-out` and `mirror-in`: a queue mirrored to NATS
//! JetStream and back, exactly once (see `docs/bridge.md`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mmkit_bridge::{Event, InOptions, MirrorIn, MirrorOut, OutOptions, StreamOptions, Summary};
use mmkit_queue::Queue;

use super::parse_seconds;
use crate::{CliError, CliResult};

/// Where the server is and what the mirror reports.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Queue directory.
    dir: PathBuf,
    /// NATS server URL; credentials go in the URL (nats://user:password@host:4222).
    #[arg(long, value_name = "URL")]
    server: String,
    /// The JetStream stream.
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// Stop once caught up with what was there at the start, instead of
    /// following for ever.
    #[arg(long)]
    once: bool,
    /// Skip (and report) a message too large for the other side instead of
    /// stopping with an error.
    #[arg(long)]
    skip_oversized: bool,
    /// One JSON object per line on stdout: connected, resynced, progress
    /// (with lag), skipped, retrying, done.
    #[arg(long)]
    json: bool,
    /// How long to wait for an acknowledgement or an API answer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    ack_timeout: Duration,
    /// Seconds between progress reports.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    progress_interval: Duration,
}

/// `mmkit queue mirror-out`.
#[derive(Debug, clap::Args)]
pub struct OutArgs {
    #[command(flatten)]
    common: Common,
    /// Subject to publish on (default: the stream's name); this queue's alone.
    #[arg(long, value_name = "S")]
    subject: Option<String>,
    /// Named cursor that remembers what is in the stream (default nats-STREAM).
    #[arg(long, value_name = "NAME")]
    cursor: Option<String>,
    /// Create the stream if it is missing (file storage, the subject only).
    #[arg(long)]
    create_stream: bool,
    /// With --create-stream: replicas (default 1; 3 or 5 in a cluster, for
    /// durability across machines).
    #[arg(long, value_name = "N")]
    replicas: Option<usize>,
    /// With --create-stream: how long the server drops re-sent message ids,
    /// in seconds (default 120).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    duplicate_window: Option<Duration>,
    /// With --create-stream: remove messages older than this many seconds
    /// (default: keep them).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    max_age: Option<Duration>,
    /// Publishes in flight at most (sent, not yet known to be in the stream;
    /// pipelined only when the stream takes this subject alone).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_in_flight: usize,
    /// Also publish records that were mirrored into this queue (off: a
    /// two-way mirror does not loop).
    #[arg(long)]
    include_mirrored: bool,
}

/// `mmkit queue mirror-in`.
#[derive(Debug, clap::Args)]
pub struct InArgs {
    #[command(flatten)]
    common: Common,
    /// Only these subjects of the stream (wildcards allowed; default: all).
    #[arg(long, value_name = "S")]
    subject: Option<String>,
}

/// Runs mirror-out.
pub fn out(args: OutArgs) -> CliResult<()> {
    let c = &args.common;
    let queue = open(&c.dir)?;
    let mut opts = OutOptions::new(&c.server, &c.stream);
    opts.subject = args.subject.clone();
    opts.cursor = args.cursor.clone();
    opts.create = stream_options(&args)?;
    opts.max_in_flight = args.max_in_flight;
    opts.include_mirrored = args.include_mirrored;
    opts.skip_oversized = c.skip_oversized;
    opts.once = c.once;
    opts.ack_timeout = c.ack_timeout;
    opts.progress_every = c.progress_interval;
    let what = format!("stream {} (cursor {})", c.stream, opts.cursor_name());
    let mut mirror = MirrorOut::new(queue, opts)?;
    let mut out = Reporter::new(c.json, "published");
    let summary = mmkit_bridge::block_on(mirror.run(mmkit_bridge::shutdown_signal(), &mut |e| out.event(e)))
        .map_err(|e| CliError::Other(format!("starting the mirror: {e}")))?;
    out.done(summary?, &format!("to {what}"))
}

/// What --create-stream creates; the stream options without it are an error.
fn stream_options(args: &OutArgs) -> CliResult<Option<StreamOptions>> {
    let given = args.replicas.is_some() || args.duplicate_window.is_some() || args.max_age.is_some();
    if !args.create_stream {
        return match given {
            true => Err(CliError::Usage(
                "--replicas, --duplicate-window and --max-age go with --create-stream".into(),
            )),
            false => Ok(None),
        };
    }
    let default = StreamOptions::default();
    Ok(Some(StreamOptions {
        replicas: args.replicas.unwrap_or(default.replicas),
        duplicate_window: args.duplicate_window.unwrap_or(default.duplicate_window),
        max_age: args.max_age,
    }))
}

/// Runs mirror-in.
pub fn r#in(args: InArgs) -> CliResult<()> {
    let c = &args.common;
    let queue = match c.dir.join("meta").exists() {
        true => open(&c.dir)?,
        false => Queue::options().create(true).open(&c.dir)?,
    };
    let mut opts = InOptions::new(&c.server, &c.stream);
    opts.subject = args.subject.clone();
    opts.skip_oversized = c.skip_oversized;
    opts.once = c.once;
    opts.ack_timeout = c.ack_timeout;
    opts.progress_every = c.progress_interval;
    let mut mirror = MirrorIn::new(queue, opts)?;
    let mut out = Reporter::new(c.json, "appended");
    let summary = mmkit_bridge::block_on(mirror.run(mmkit_bridge::shutdown_signal(), &mut |e| out.event(e)))
        .map_err(|e| CliError::Other(format!("starting the mirror: {e}")))?;
    out.done(summary?, &format!("from stream {}", c.stream))
}

fn open(dir: &Path) -> CliResult<Queue> {
    if !dir.join("meta").exists() {
        return Err(CliError::Usage(format!("{}: no such queue directory", dir.display())));
    }
    Ok(Queue::open(dir)?)
}

/// Prints events: JSON lines on stdout, or a spinner and notices on stderr.
struct Reporter {
    json: bool,
    verb: &'static str,
    spinner: Option<indicatif::ProgressBar>,
}

impl Reporter {
    fn new(json: bool, verb: &'static str) -> Reporter {
        let spinner = (!json && std::io::stderr().is_terminal()).then(|| {
            let s = indicatif::ProgressBar::new_spinner();
            s.enable_steady_tick(Duration::from_millis(200));
            s
        });
        Reporter { json, verb, spinner }
    }

    fn event(&mut self, e: Event) {
        if self.json {
            // A closed stdout must not stop the mirror; the exit status says
            // how it ended.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", event_json(&e));
            let _ = out.flush();
            return;
        }
        match e {
            Event::Progress(p) => {
                if let Some(s) = &self.spinner {
                    let lag = p.lag.map_or_else(|| "?".into(), |l| l.to_string());
                    s.set_message(format!(
                        "{} {}, lag {lag}, in flight {}, stream sequence {}",
                        self.verb, p.messages, p.in_flight, p.stream_seq
                    ));
                }
            }
            Event::Retrying { error, delay } => {
                self.notice(&format!("mmkit: retrying in {:.1} s: {error}", delay.as_secs_f64()))
            }
            Event::Skipped { what, reason } => self.notice(&format!("mmkit: skipped {what}: {reason}")),
            Event::StreamCreated { stream } => self.notice(&format!("mmkit: created stream {stream}")),
            _ => {}
        }
    }

    fn notice(&self, line: &str) {
        match &self.spinner {
            Some(s) => s.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn done(&mut self, s: Summary, what: &str) -> CliResult<()> {
        if let Some(sp) = self.spinner.take() {
            sp.finish_and_clear();
        }
        let mut out = std::io::stdout().lock();
        let line = if self.json {
            serde_json::json!({
                "event": "done", "messages": s.messages, "skipped": s.skipped,
                "position": s.position, "stream_seq": s.stream_seq,
            })
            .to_string()
        } else {
            format!(
                "{} {} messages {what} ({} skipped, stream sequence {})",
                self.verb, s.messages, s.skipped, s.stream_seq
            )
        };
        writeln!(out, "{line}").map_err(CliError::Output)
    }
}

fn event_json(e: &Event) -> serde_json::Value {
    use serde_json::json;
    match e {
        Event::Connected { url } => json!({ "event": "connected", "server": url }),
        Event::StreamCreated { stream } => json!({ "event": "stream_created", "stream": stream }),
        Event::Resynced { position, stream_seq, pipelined } => json!({
            "event": "resynced", "position": position, "stream_seq": stream_seq, "pipelined": pipelined,
        }),
        Event::Progress(p) => json!({
            "event": "progress", "messages": p.messages, "skipped": p.skipped, "position": p.position,
            "lag": p.lag, "in_flight": p.in_flight, "stream_seq": p.stream_seq,
            "age_ms": p.age.map(|a| a.as_secs_f64() * 1e3),
        }),
        Event::Skipped { what, reason } => json!({ "event": "skipped", "what": what, "reason": reason }),
        Event::Retrying { error, delay } => json!({
            "event": "retrying", "error": error, "delay_ms": delay.as_millis() as u64,
        }),
        other => json!({ "event": "other", "detail": format!("{other:?}") }),
    }
}
