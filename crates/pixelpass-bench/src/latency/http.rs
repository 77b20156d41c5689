//! The HTTP-TS viewer of `bench latency`: `GET …/stream.ts`, and every
//! H.264 access unit goes to the decoder the moment its last TS packet
//! arrived ([`VideoAus`]).
//!
//! The request is HTTP/1.0, so the body comes unframed (no chunked
//! encoding to undo; hyper writes the same bytes at the same moments either
//! way). `TCP_NODELAY` on our side; reads of up to 64 KiB as data comes.
//!
//! [`measure_hub`] is the same viewer fed straight from the hub (a
//! subscriber, as the HTTP egress has): the producer's share of the
//! latency, without the egress and TCP.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Decoding, Host, LatencyPath, Report};
use pixelpass_testkit::access_units::VideoAus;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// TS bytes → access units → decoder.
struct TsViewer {
    decoding: Decoding,
    demux: VideoAus,
    aus: Vec<Vec<u8>>,
    pushed: usize,
}

impl TsViewer {
    fn start() -> anyhow::Result<Self> {
        Ok(Self {
            decoding: Decoding::start()?,
            demux: VideoAus::new(),
            aus: Vec::new(),
            pushed: 0,
        })
    }

    fn feed(&mut self, ts: &[u8]) -> anyhow::Result<()> {
        self.demux.push(ts, &mut self.aus);
        for au in self.aus.drain(..) {
            self.decoding.decoder.push(au).map_err(anyhow::Error::msg)?;
            self.pushed += 1;
        }
        Ok(())
    }

    async fn report(self, path: LatencyPath, requested: Instant) -> Report {
        let pushed = self.pushed;
        let (frames, error) = self.decoding.finish(Duration::from_millis(200)).await;
        let mut report = Report::from_frames(path, &frames, requested);
        if let Some(e) = error {
            report.note = Some(format!("decoder error: {e}"));
        } else if frames.len() + 2 < pushed {
            report.note = Some(format!(
                "{pushed} access units received, {} decoded",
                frames.len()
            ));
        }
        report
    }
}

pub async fn measure(host: &Host, seconds: f64) -> anyhow::Result<Report> {
    let mut viewer = TsViewer::start()?;
    let requested = Instant::now();
    let mut s = TcpStream::connect(host.http).await.context("connect")?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: pixelpass-bench-latency\r\n\r\n",
        host.stream_path(),
        host.http
    );
    s.write_all(req.as_bytes()).await?;

    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut deadline: Option<Instant> = None;
    let hard_stop = requested + Duration::from_secs_f64(seconds) + Duration::from_secs(30);
    loop {
        let until = deadline.unwrap_or(hard_stop);
        let n = match tokio::time::timeout_at(until.into(), s.read(&mut buf)).await {
            Err(_) if deadline.is_none() => bail!("no response within 30 s"),
            Err(_) => break,
            Ok(r) => r.context("read")?,
        };
        if n == 0 {
            bail!(
                "the server closed the stream after {} frames",
                viewer.pushed
            );
        }
        if deadline.is_some() {
            viewer.feed(&buf[..n])?;
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() > MAX_HEAD {
                bail!("response head too large");
            }
            continue;
        };
        let status = String::from_utf8_lossy(&head[..end])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        if status.split(' ').nth(1) != Some("200") {
            bail!("the host answered {status:?}");
        }
        // Watch for `seconds` from the join on.
        deadline = Some(Instant::now() + Duration::from_secs_f64(seconds));
        viewer.feed(&head[end + 4..])?;
    }
    Ok(viewer.report(LatencyPath::Http, requested).await)
}

/// The same, fed by a hub subscriber instead of HTTP.
pub async fn measure_hub(host: &Host, seconds: f64) -> anyhow::Result<Report> {
    let mut viewer = TsViewer::start()?;
    let requested = Instant::now();
    let lease = host
        .supervisor
        .acquire()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sub = host.supervisor.hub().subscribe(Instant::now());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while let Ok(Some(bytes)) = tokio::time::timeout_at(deadline.into(), sub.next()).await {
        viewer.feed(&bytes)?;
    }
    drop(lease);
    Ok(viewer.report(LatencyPath::Hub, requested).await)
}
