//! The HTTP-TS viewer of `bench latency`: `GET …/stream.ts`, and every
//! H.264 access unit goes to the decoder the moment its last TS packet
//! arrived ([`VideoAus`]).
//!
//! The request goes through the test kit's HTTP client (hyper's), which
//! undoes the chunked framing and hands each piece of body over as it
//! comes off the socket. `TCP_NODELAY` on our side.
//!
//! [`measure_hub`] is the same viewer fed straight from the hub (a
//! subscriber, as the HTTP egress has): the producer's share of the
//! latency, without the egress and TCP.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{Decoding, Host, LatencyPath, Report};
use pixelpass_testkit::access_units::VideoAus;
use pixelpass_testkit::client::http::{self, Stream};

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
    let authority = host.http.to_string();
    let headers = [("User-Agent", "pixelpass-bench-latency")];
    let open = async {
        let tcp = http::connect(&authority).await?;
        Stream::send(tcp, &authority, "GET", &host.stream_path(), &headers, b"").await
    };
    let mut stream = tokio::time::timeout(Duration::from_secs(30), open)
        .await
        .map_err(|_| anyhow::anyhow!("no response within 30 s"))?
        .context("GET the stream")?;
    if stream.status != 200 {
        bail!("the host answered {}", stream.status);
    }
    // Watch for `seconds` from the join on.
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while let Some(piece) = stream.next_until(deadline).await {
        match piece.context("read")? {
            Some(ts) => viewer.feed(&ts)?,
            None => bail!(
                "the server closed the stream after {} frames",
                viewer.pushed
            ),
        }
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
