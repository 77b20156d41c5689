//! The server under test, in this process: hub, supervisor with the replay
//! producer, HTTP server and WHEP endpoints on loopback.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::replay::{record, RtpReplay};
use super::sample::RtpSample;
use super::WhepFanoutArgs;
use pixelpass::egress::whep::{WebRtcArgs, Whep};
use pixelpass::http::{self as server, Limits};
use pixelpass::hub::{Hub, HubConfig};
use pixelpass::registry::{Registry, StreamEntry};
use pixelpass::supervisor::{Policy, Supervisor};

pub(super) struct Server {
    rt: tokio::runtime::Runtime,
    sup: Supervisor,
    whep: Whep,
    pub(super) url: String,
    stop: tokio::sync::watch::Sender<bool>,
    pub(super) late_us: Arc<AtomicU64>,
}

impl Server {
    /// The server under test, its stream at `bitrate` kbit/s of video.
    pub(super) fn start(
        args: &WhepFanoutArgs,
        bitrate: u32,
        max_peers: usize,
    ) -> anyhow::Result<Self> {
        if args.workers == 0 {
            bail!("--workers must be at least 1");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .thread_name("whep-server")
            .enable_all()
            .build()?;
        let sample = if args.synthetic {
            RtpSample::synthetic(bitrate)
        } else {
            rt.block_on(record(bitrate, args.record_seconds))?
        };
        eprintln!(
            "replaying {:.1} s laps at {:.2} Mbit/s (RTP incl. headers, video + audio)",
            sample.period.as_secs_f64(),
            sample.bitrate() / 1e6
        );
        let late_us = Arc::new(AtomicU64::new(0));
        let producer = RtpReplay {
            sample: Arc::new(sample),
            late_us: late_us.clone(),
        };
        let token = pixelpass::token::generate()?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (sup, whep, addr) = rt.block_on(async {
            let webrtc = WebRtcArgs {
                webrtc_udp: "127.0.0.1:0".parse()?,
                webrtc_pacing: args.pacing,
                webrtc_bwe: args.bwe,
                webrtc_max_load: args.max_load,
                ..WebRtcArgs::default()
            };
            let whep = Whep::start(&webrtc).await?;
            let policy = Policy {
                max_viewers: max_peers,
                // The producer stays up between steps: every step sees the same warm hub.
                linger: Duration::from_secs(24 * 3600),
                ..Policy::default()
            };
            let sup = Supervisor::spawn(policy, Hub::new(HubConfig::default()), Arc::new(producer));
            let registry = Registry::new();
            registry.insert(StreamEntry::new("bench", token.clone(), sup.clone()));
            let listener = server::bind("127.0.0.1:0".parse()?).await?;
            let addr = listener.local_addr()?;
            tokio::spawn(server::serve(
                listener,
                server::router_with(registry, Some(whep.clone())),
                Limits::default(),
                stop_rx,
            ));
            anyhow::Ok((sup, whep, addr))
        })?;
        Ok(Self {
            rt,
            sup,
            whep,
            url: format!("http://{addr}/{token}/whep"),
            stop,
            late_us,
        })
    }

    /// Start the producer, so every step's RSS baseline holds a warm hub.
    pub(super) fn warm_up(&self) -> anyhow::Result<()> {
        let _guard = self.rt.enter();
        let lease = self.sup.acquire().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.rt
            .block_on(lease.ready(Duration::from_secs(30)))
            .context("the replay did not start")?;
        std::thread::sleep(Duration::from_secs(3));
        drop(lease);
        Ok(())
    }

    pub(super) fn wait_idle(&self, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            let n = self.whep.peers(None);
            if n == 0 || Instant::now() >= until {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn stop(self) {
        let _ = self.stop.send(true);
        let (whep, sup) = (self.whep.clone(), self.sup.clone());
        self.rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(3), whep.shutdown()).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), sup.shutdown()).await;
        });
        self.rt.shutdown_timeout(Duration::from_secs(2));
    }
}
