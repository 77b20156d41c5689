//! One timed start: `PUT …/command {"command":"start"}` → the first WHEP
//! keyframe one in-process [`WhepClient`] depacketized.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::server::ServeChild;
use super::{stream_id, ServeBenchArgs};
use pixelpass_testkit::client::{WhepClient, WhepEvent};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One timed start.
#[derive(Debug, Clone, Default)]
pub(super) struct Join {
    pub(super) put: Duration,
    pub(super) answer: Option<Duration>,
    pub(super) connected: Option<Duration>,
    pub(super) keyframe: Option<Duration>,
    pub(super) error: Option<String>,
}

/// Start stream `i` and time its first WHEP keyframe.
pub(super) fn start_and_join(
    server: &mut ServeChild,
    exe: &std::path::Path,
    args: &ServeBenchArgs,
    i: u32,
    timeout: Duration,
) -> anyhow::Result<Join> {
    let id = stream_id(i);
    let url = server.whep_url(i);
    let t0 = Instant::now();
    if args.published {
        // The publisher starts (capture, encoder, WHIP POST, ICE): the viewer's
        // POST waits at the relay until the stream is live.
        server.publish(exe, i, args)?;
    } else {
        let (status, body) = server.api(
            "PUT",
            &format!("/streams/{id}/command"),
            r#"{"command":"start"}"#,
        )?;
        if status != 200 {
            bail!("PUT /streams/{id}/command start: {status} {body}");
        }
    }
    let mut join = Join {
        put: t0.elapsed(),
        ..Join::default()
    };
    let deadline = t0 + timeout;
    let r: anyhow::Result<()> = server.rt.block_on(async {
        let mut c = WhepClient::connect(&url, LOOPBACK).await?;
        join.answer = c.answered_at().map(|a| a.saturating_duration_since(t0));
        let r = loop {
            match c.next_event(deadline).await? {
                None => break Err(anyhow::anyhow!("no keyframe within {timeout:?}")),
                Some(WhepEvent::Connected) => {
                    join.connected = c.connected_at().map(|a| a.saturating_duration_since(t0));
                }
                Some(WhepEvent::Video(f)) if f.keyframe => {
                    join.keyframe = Some(f.arrived.saturating_duration_since(t0));
                    break Ok(());
                }
                Some(WhepEvent::Closed) => break Err(anyhow::anyhow!("closed by the server")),
                Some(_) => {}
            }
        };
        let _ = c.delete().await;
        r
    });
    if let Err(e) = r {
        join.error = Some(format!("{e:#}"));
    }
    Ok(join)
}
