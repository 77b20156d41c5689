//! The load generator of `bench fanout`: N HTTP-TS viewers on loopback in
//! one process (the hidden `pixelpass-bench fanout-client` subcommand), pinned to its
//! own CPU so the server's CPU time is measured alone.
//!
//! One current-thread tokio runtime; every viewer sends a raw
//! `GET /TOKEN/stream.ts HTTP/1.1`, checks the status line, then reads with
//! one shared 64 KiB buffer and counts body payload bytes (chunked framing
//! removed) and the longest gap between two reads. It prints two JSON lines
//! on stdout: `{"event":"ready",…}` once every viewer got its response head
//! and the warm-up passed (the measurement window starts then), and
//! `{"event":"result",…}` when the window ends; then it exits, closing every
//! connection. It is bounded: at most [`MAX_VIEWERS`] viewers and a hard
//! deadline, and it dies with its parent.
//!
//! Files: this one holds the arguments, the JSON lines ([`ClientEvent`]) and
//! [`run`]; [`http`] parses the URL, [`body`] counts body payload bytes
//! through any framing (chunked, content-length, close), [`viewers`] runs
//! the viewers and measures the window.
//!
//! The response head goes through the test kit's HTTP client's head parser
//! ([`pixelpass_testkit::client::http::raw`]), not through the client
//! itself: hyper keeps the socket until the response has ended, so every
//! body byte would pass through a per-connection buffer, a `Bytes` and a
//! channel to a task of its own, thousands of times over, where this reads
//! each socket into one shared buffer and only counts.

mod body;
mod http;
mod viewers;

pub use http::parse_url;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::procstat;
use viewers::drive;

/// More viewers than this is a typo, not a benchmark.
pub const MAX_VIEWERS: usize = 20_000;

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Stream URL, e.g. http://127.0.0.1:PORT/TOKEN/stream.ts (loopback only).
    #[arg(long)]
    pub url: String,
    /// Concurrent viewers.
    #[arg(long, default_value_t = 1)]
    pub viewers: usize,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds between "every viewer connected" and the window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Give up waiting for response heads after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Pin this process to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// The lines the client prints (one JSON object per line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ClientEvent {
    Ready {
        connected: usize,
        failed: usize,
        errors: Vec<String>,
    },
    Result {
        viewers: usize,
        connected: usize,
        failed: usize,
        /// Viewers whose connection ended before the window did.
        closed_early: usize,
        window_s: f64,
        /// Body payload bytes per viewer received in the window (chunk framing excluded).
        payload_bytes: Vec<u64>,
        /// Everything read in the window, framing included.
        raw_bytes_total: u64,
        /// Longest gap between two reads per viewer, in the window (ms).
        max_gap_ms: Vec<u64>,
        /// CPU the client used during the window (near 1.0 s/s: the client was the bottleneck).
        client_cpu_s: f64,
        errors: Vec<String>,
    },
}

/// The hidden `pixelpass-bench fanout-client` subcommand.
pub fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    if args.viewers == 0 || args.viewers > MAX_VIEWERS {
        bail!("--viewers must be 1..={MAX_VIEWERS}");
    }
    let finite = |x: f64, what: &str, max: f64| {
        if x.is_finite() && (0.0..=max).contains(&x) {
            Ok(Duration::from_secs_f64(x))
        } else {
            Err(anyhow::anyhow!("{what} must be 0..={max} seconds"))
        }
    };
    let window = finite(args.seconds, "--seconds", 3600.0)?;
    let warmup = finite(args.warmup, "--warmup", 600.0)?;
    let connect_timeout = finite(args.connect_timeout, "--connect-timeout", 600.0)?;
    let (addr, path) = parse_url(&args.url)?;
    // Die with the parent: a benchmark that lost its server has nothing to measure.
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a signal number for this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    if std::os::unix::process::parent_id() == 1 {
        bail!("the parent is gone");
    }
    if let Some(cpu) = args.cpu {
        procstat::pin_to_cpu(cpu).with_context(|| format!("cannot pin the client to CPU {cpu}"))?;
    }
    procstat::raise_nofile_limit().context("cannot raise the open-file limit")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    // A hard bound whatever happens (a server that never answers, a stuck window).
    let deadline = connect_timeout + warmup + window + Duration::from_secs(10);
    let result = local.block_on(&rt, async move {
        tokio::time::timeout(
            deadline,
            drive(addr, path, args.viewers, window, warmup, connect_timeout),
        )
        .await
    });
    match result {
        Ok(r) => r?,
        Err(_) => bail!("the client passed its deadline of {deadline:?}"),
    }
    // Exit without tearing the tasks down one by one: the kernel closes the sockets.
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_single_json_lines() {
        let ev = ClientEvent::Result {
            viewers: 2,
            connected: 2,
            failed: 0,
            closed_early: 0,
            window_s: 10.0,
            payload_bytes: vec![5_000_000, 4_999_812],
            raw_bytes_total: 10_001_000,
            max_gap_ms: vec![40, 41],
            client_cpu_s: 0.2,
            errors: vec![],
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(
            line.starts_with("{\"event\":\"result\"") && !line.contains('\n'),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<ClientEvent>(&line).unwrap(), ev);
        let ready: ClientEvent =
            serde_json::from_str(r#"{"event":"ready","connected":3,"failed":0,"errors":[]}"#)
                .unwrap();
        assert_eq!(
            ready,
            ClientEvent::Ready {
                connected: 3,
                failed: 0,
                errors: vec![]
            }
        );
    }
}
