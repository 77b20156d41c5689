//! The load of the soak: viewers that come and go. An HTTP-TS cycle
//! connects, GETs `stream.ts`, reads until the first piece of body and
//! closes; a WHEP cycle POSTs an offer, does ICE/DTLS, waits for its first
//! keyframe, then DELETEs its resource or vanishes without a word (its peer
//! then lives until the server's consent timeout). `concurrency` cycles run
//! at once, each within a deadline, `count` in all.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use pixelpass_testkit::client::http::{connect, Stream};
use pixelpass_testkit::client::{WhepClient, WhepEvent};

/// A cycle that takes longer than this failed.
pub const CYCLE_DEADLINE: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cycle {
    Http,
    /// Even-numbered cycles DELETE, odd ones vanish.
    Whep,
}

/// What a batch of cycles did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Done {
    pub ok: u64,
    pub failed: u64,
    pub deleted: u64,
    pub vanished: u64,
}

impl Done {
    /// Count `other`'s cycles in, and keep the first reason a cycle failed.
    pub fn add(&mut self, other: Done, why: Option<String>, first_why: &mut Option<String>) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.deleted += other.deleted;
        self.vanished += other.vanished;
        if first_why.is_none() {
            *first_why = why;
        }
    }
}

/// Run cycles `first..first + count` of `kind`, `concurrency` at a time.
/// The first failure's reason is kept for the report.
pub async fn run(
    kind: Cycle,
    addr: SocketAddr,
    path: String,
    first: u64,
    count: u64,
    concurrency: usize,
) -> (Done, Option<String>) {
    let next = Arc::new(AtomicU64::new(first));
    let end = first + count;
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        let path = path.clone();
        workers.push(tokio::spawn(async move {
            let mut done = Done::default();
            let mut why = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let r = match kind {
                    Cycle::Http => tokio::time::timeout(CYCLE_DEADLINE, http(addr, &path)).await,
                    Cycle::Whep => {
                        tokio::time::timeout(CYCLE_DEADLINE, whep(addr, &path, i.is_multiple_of(2)))
                            .await
                    }
                };
                match r {
                    Ok(Ok(deleted)) => {
                        done.ok += 1;
                        if kind == Cycle::Whep {
                            if deleted {
                                done.deleted += 1;
                            } else {
                                done.vanished += 1;
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        done.failed += 1;
                        tracing::warn!("cycle {i} failed: {e:#}");
                        why.get_or_insert(format!("{e:#}"));
                    }
                    Err(_) => {
                        done.failed += 1;
                        why.get_or_insert(format!("a cycle took over {CYCLE_DEADLINE:?}"));
                    }
                }
            }
            (done, why)
        }));
    }
    let mut total = Done::default();
    let mut first_why = None;
    for w in workers {
        match w.await {
            Ok((d, why)) => total.add(d, why, &mut first_why),
            Err(e) => first_why = Some(format!("a load task panicked: {e}")),
        }
    }
    (total, first_why)
}

fn recent_ports() -> &'static std::sync::Mutex<std::collections::HashMap<u16, Instant>> {
    static PORTS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u16, Instant>>> =
        std::sync::OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// One HTTP-TS viewer: the first piece of body, then close.
async fn http(addr: SocketAddr, path: &str) -> anyhow::Result<bool> {
    let tcp = connect(&addr.to_string()).await?;
    let mut s = Stream::send(tcp, &addr.to_string(), "GET", path, &[], b"").await?;
    if s.status != 200 {
        bail!("GET {path}: {}", s.status);
    }
    match s.next().await? {
        Some(b) if !b.is_empty() => Ok(false),
        _ => bail!("GET {path}: the body ended before a byte"),
    }
}

/// One WebRTC viewer: joined once its first keyframe is in; then it leaves
/// with a DELETE (`delete`) or by going silent. True when it DELETEd.
async fn whep(addr: SocketAddr, path: &str, delete: bool) -> anyhow::Result<bool> {
    let url = format!("http://{addr}{path}");
    let mut c = WhepClient::connect(&url, IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    // A vanished viewer's peer lives on for the consent timeout: a new one
    // whose UDP port the kernel hands out again comes from the same address.
    let port = c.local_addr().port();
    let reused = {
        let mut ports = recent_ports().lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        ports.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
        ports.insert(port, now).map(|t| now.duration_since(t))
    };
    // Shorter than the cycle's deadline, so a stuck join says how far it got.
    let until = Instant::now() + CYCLE_DEADLINE * 2 / 3;
    let (mut connected, mut frames) = (false, 0u64);
    loop {
        match c.next_event(until).await? {
            Some(WhepEvent::Video(f)) if f.keyframe => break,
            Some(WhepEvent::Video(_)) => frames += 1,
            Some(WhepEvent::Connected) => connected = true,
            Some(WhepEvent::Closed) => bail!("the server closed the peer before a keyframe"),
            Some(_) => {}
            None => {
                return Err(anyhow!(
                    "no keyframe within {:?} ({}; {frames} other frames; UDP port {port} {})",
                    CYCLE_DEADLINE * 2 / 3,
                    if connected {
                        "connected"
                    } else {
                        "ICE/DTLS never connected"
                    },
                    match reused {
                        Some(d) => format!("last used by a viewer {:.1} s before", d.as_secs_f64()),
                        None => "not used in the last minute".into(),
                    }
                ))
            }
        }
    }
    if delete {
        let status = c.delete().await?;
        if status != 200 && status != 204 {
            bail!("DELETE of the WHEP resource: {status}");
        }
    }
    Ok(delete)
}
