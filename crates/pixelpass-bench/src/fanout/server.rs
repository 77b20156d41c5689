//! The server under test: the real hub, supervisor and HTTP server on
//! loopback in this process, fed by the replay producer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::FanoutArgs;
use crate::replay::{ReplayProducer, ReplayStats, Sample};
use pixelpass::http::{self as server, Limits};
use pixelpass::hub::{Hub, HubConfig};
use pixelpass::registry::{Registry, StreamEntry};
use pixelpass::supervisor::{Policy, Supervisor};

pub(super) struct Server {
    rt: tokio::runtime::Runtime,
    supervisor: Supervisor,
    pub(super) hub: Hub,
    pub(super) url: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    pub(super) replay: Arc<ReplayStats>,
}

impl Server {
    pub(super) fn start(
        args: &FanoutArgs,
        sample: Arc<Sample>,
        max_viewers: usize,
    ) -> anyhow::Result<Server> {
        let rt = if args.workers == 0 {
            bail!("--workers must be at least 1");
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.workers)
                .enable_all()
                .build()?
        };
        let producer = ReplayProducer::new(sample);
        let replay = producer.stats();
        let hub = Hub::new(HubConfig::default());
        let token = pixelpass::token::generate()?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let (supervisor, addr) = rt.block_on(async {
            let policy = Policy {
                max_viewers,
                // Capture stays up between steps: every step sees the same warm hub.
                linger: Duration::from_secs(24 * 3600),
                ..Policy::default()
            };
            let supervisor = Supervisor::spawn(policy, hub.clone(), Arc::new(producer));
            let registry = Registry::new();
            registry.insert(StreamEntry::new("bench", token.clone(), supervisor.clone()));
            let listener = server::bind("127.0.0.1:0".parse().expect("literal address")).await?;
            let addr = listener.local_addr()?;
            tokio::spawn(server::serve(
                listener,
                server::router(registry),
                Limits::default(),
                shutdown_rx,
            ));
            anyhow::Ok((supervisor, addr))
        })?;
        Ok(Server {
            rt,
            supervisor,
            hub,
            url: format!("http://{addr}/{token}/stream.ts"),
            shutdown,
            replay,
        })
    }

    /// Start the producer and let the hub's ring fill, so the first step's
    /// RSS baseline already holds a full ring like every later one.
    pub(super) fn warm_up(&self) -> anyhow::Result<()> {
        let _guard = self.rt.enter();
        let lease = self
            .supervisor
            .acquire()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.rt
            .block_on(lease.ready(Duration::from_secs(30)))
            .context("the replay producer did not start")?;
        let capacity = self.hub.config().capacity as u64;
        let until = Instant::now() + Duration::from_secs(40);
        while self.hub.stats().chunks < capacity + 8 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(lease);
        Ok(())
    }

    /// Wait until the last step's viewers are gone (their leases released).
    pub(super) fn wait_idle(&self, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            let v = self.supervisor.status().viewers;
            if v == 0 || Instant::now() >= until {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn stop(self) {
        let _ = self.shutdown.send(true);
        let sup = self.supervisor.clone();
        let _ = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), sup.shutdown()).await });
        self.rt.shutdown_timeout(Duration::from_secs(2));
    }
}
