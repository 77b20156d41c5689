//! The WebRTC viewer of `bench latency`: a str0m peer does the WHEP exchange
//! (full ICE, DTLS, SRTP over loopback, [`pixelpass_testkit::client::whep`]); every
//! access unit str0m completes goes straight to the decoder.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{Decoding, LatencyPath, Report};
use pixelpass_testkit::client::whep::{WhepClient, WhepEvent};

/// Watch `whep_url` for `seconds`, decoding each frame's time code.
pub async fn measure(whep_url: &str, path: LatencyPath, seconds: f64) -> anyhow::Result<Report> {
    let decoding = Decoding::start()?;
    let requested = Instant::now();
    let mut client = WhepClient::connect(whep_url, IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let hard_stop = requested + Duration::from_secs_f64(seconds) + Duration::from_secs(30);
    let mut deadline: Option<Instant> = None;
    let mut pushed = 0usize;
    loop {
        match client.next_event(deadline.unwrap_or(hard_stop)).await? {
            None if deadline.is_none() => bail!("no video within 30 s"),
            None => break,
            Some(WhepEvent::Video(f)) => {
                deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs_f64(seconds));
                decoding
                    .decoder
                    .push(f.annexb)
                    .map_err(anyhow::Error::msg)?;
                pushed += 1;
            }
            Some(WhepEvent::Closed) => {
                bail!("the server closed the connection after {pushed} frames")
            }
            Some(_) => {}
        }
    }
    let stats = client.stats();
    let _ = client.delete().await;
    let (frames, error) = decoding.finish(Duration::from_millis(200)).await;
    let mut report = Report::from_frames(path, &frames, requested);
    if let Some(e) = error {
        report.note = Some(format!("decoder error: {e}"));
    } else if stats.gaps > 0 || frames.len() + 2 < pushed {
        report.note = Some(format!(
            "{pushed} frames received ({} after a packet gap), {} decoded",
            stats.gaps,
            frames.len()
        ));
    }
    Ok(report)
}
