//! The impaired link at work: a TUN device in each of two namespaces and a
//! thread that moves packets between them through a [`Shaper`] per way,
//! waking when a device has a packet, when one is due, or when the settings
//! change.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::shaper::{BadImpairment, Impairment, Shaper, Stats};
use super::tun::Tun;
use crate::netlab::{netns_path, ns_thread, run};

/// The longest the forwarder sleeps with nothing due (it wakes earlier for
/// packets, due times, new settings and stop).
const IDLE: Duration = Duration::from_millis(100);
/// Packets read from one device before the other gets a turn.
const READ_BATCH: usize = 256;

/// Which way across the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What namespace A sends to B.
    AToB,
    /// What namespace B sends to A.
    BToA,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::AToB => 0,
            Direction::BToA => 1,
        }
    }
}

/// How to build an impaired link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// The TUN device's name in both namespaces (unique in each).
    pub dev: String,
    /// A's address on the link (B's peer), and B's.
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
    /// Seeds both ways' random streams (B→A gets a value derived from it).
    pub seed: u64,
    pub a_to_b: Impairment,
    pub b_to_a: Impairment,
}

impl Default for LinkConfig {
    /// `imp0`, 198.51.100.1 ↔ 198.51.100.2 (TEST-NET-2), seed 16, clean.
    fn default() -> LinkConfig {
        LinkConfig {
            dev: "imp0".into(),
            a_addr: Ipv4Addr::new(198, 51, 100, 1),
            b_addr: crate::netlab::THIN,
            seed: 16,
            a_to_b: Impairment::NONE,
            b_to_a: Impairment::NONE,
        }
    }
}

impl LinkConfig {
    /// The default link with `imp` both ways (each way its own draws).
    pub fn symmetric(imp: Impairment) -> LinkConfig {
        LinkConfig {
            a_to_b: imp,
            b_to_a: imp,
            ..LinkConfig::default()
        }
    }
}

struct Shared {
    shapers: Mutex<[Shaper; 2]>,
    stop: AtomicBool,
    /// An eventfd the forwarder polls: written on `set` and on stop.
    wake: OwnedFd,
    /// Packets the kernel refused from a device (they count as forwarded).
    write_errors: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, [Shaper; 2]> {
        self.shapers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd; a full
        // counter (EAGAIN) already means "wake up".
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// A running impaired link; dropping it stops the forwarder and deletes
/// both devices. Drop it before the namespaces go (an open TUN device
/// keeps its namespace alive, nameless).
pub struct ImpairedLink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    cfg: LinkConfig,
}

impl ImpairedLink {
    /// Build the link between the namespaces named `a` and `b` (as in
    /// /run/netns) with `ip` at `ip`, and start forwarding.
    pub fn start(ip: &Path, a: &str, b: &str, cfg: LinkConfig) -> anyhow::Result<ImpairedLink> {
        let shapers = [
            Shaper::new(cfg.a_to_b, cfg.seed)?,
            Shaper::new(cfg.b_to_a, cfg.seed.rotate_left(32) ^ 0xB7E1_5162_8AED_2A6A)?,
        ];
        let mut tuns = Vec::new();
        for (ns, me, peer) in [(a, cfg.a_addr, cfg.b_addr), (b, cfg.b_addr, cfg.a_addr)] {
            let dev = cfg.dev.clone();
            let tun = ns_thread::run(&netns_path(ns), format!("impair-{ns}"), move || {
                Tun::create(&dev)
            })?
            .with_context(|| format!("in namespace {ns}"))?;
            configure(ip, ns, tun.name(), me, peer)?;
            tuns.push(tun);
        }
        let (Some(tun_b), Some(tun_a)) = (tuns.pop(), tuns.pop()) else {
            bail!("the link lost a device");
        };
        // SAFETY: eventfd(2) returns a new descriptor we own, or -1.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(std::io::Error::last_os_error()).context("eventfd");
        }
        let shared = Arc::new(Shared {
            shapers: Mutex::new(shapers),
            stop: AtomicBool::new(false),
            // SAFETY: `wake` is a fresh descriptor nobody else owns.
            wake: unsafe { OwnedFd::from_raw_fd(wake) },
            write_errors: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name(format!("impair-{}", cfg.dev))
            .spawn({
                let shared = Arc::clone(&shared);
                move || forward([tun_a, tun_b], &shared)
            })
            .context("cannot start the forwarder thread")?;
        Ok(ImpairedLink {
            shared,
            thread: Some(thread),
            cfg,
        })
    }

    /// A's address on the link (what B sends to).
    pub fn a_addr(&self) -> Ipv4Addr {
        self.cfg.a_addr
    }

    /// B's address on the link (what A sends to).
    pub fn b_addr(&self) -> Ipv4Addr {
        self.cfg.b_addr
    }

    /// New settings for one way, from now on.
    pub fn set(&self, dir: Direction, imp: Impairment) -> Result<(), BadImpairment> {
        self.shared.lock()[dir.index()].set(Instant::now(), imp)?;
        self.shared.wake();
        Ok(())
    }

    /// The same settings both ways.
    pub fn set_both(&self, imp: Impairment) -> Result<(), BadImpairment> {
        imp.check()?;
        {
            let now = Instant::now();
            let mut shapers = self.shared.lock();
            for s in shapers.iter_mut() {
                s.set(now, imp)?;
            }
        }
        self.shared.wake();
        Ok(())
    }

    pub fn settings(&self, dir: Direction) -> Impairment {
        self.shared.lock()[dir.index()].settings()
    }

    pub fn stats(&self, dir: Direction) -> Stats {
        self.shared.lock()[dir.index()].stats()
    }

    /// Packets the kernel refused when the forwarder handed them over.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Whether the forwarder still runs (it stops on a device error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stop, delete the devices, and say whether the forwarder failed.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        match thread.join() {
            Ok(r) => r.context("the impaired link's forwarder failed"),
            Err(_) => Err(anyhow!("the impaired link's forwarder panicked")),
        }
    }
}

impl Drop for ImpairedLink {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("netlab: {e:#}");
        }
    }
}

/// `ip -n NS addr add ME peer PEER dev DEV`, and up.
fn configure(ip: &Path, ns: &str, dev: &str, me: Ipv4Addr, peer: Ipv4Addr) -> anyhow::Result<()> {
    let (me, peer) = (format!("{me}/32"), format!("{peer}/32"));
    for args in [
        &["addr", "add", &me, "peer", &peer, "dev", dev][..],
        &["link", "set", dev, "up"][..],
    ] {
        let mut cmd = Command::new(ip);
        cmd.arg("-n").arg(ns).args(args);
        run::check(cmd, None).with_context(|| format!("configuring {dev} in {ns}"))?;
    }
    Ok(())
}

fn pollfd(fd: std::os::fd::BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// The forwarder: device `i`'s packets go through shaper `i` into the other device.
fn forward(tuns: [Tun; 2], shared: &Shared) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65_536];
    let mut arrived: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut due: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    while !shared.stop.load(Ordering::Acquire) {
        let next = {
            let shapers = shared.lock();
            shapers.iter().filter_map(Shaper::next_due).min()
        };
        let wait = next.map_or(IDLE, |t| {
            t.saturating_duration_since(Instant::now()).min(IDLE)
        });
        let mut fds = [
            pollfd(tuns[0].as_fd()),
            pollfd(tuns[1].as_fd()),
            pollfd(shared.wake.as_fd()),
        ];
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
        };
        // SAFETY: three valid pollfds and a timespec that outlive the call.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 3, &ts, std::ptr::null()) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("ppoll");
        }
        if fds[2].revents & libc::POLLIN != 0 {
            let mut n = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our own eventfd.
            unsafe { libc::read(shared.wake.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
        }
        for (i, tun) in tuns.iter().enumerate() {
            let ev = fds[i].revents;
            if ev & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                bail!("device {} failed (poll events {ev:#x})", tun.name());
            }
            if ev & libc::POLLIN == 0 {
                continue;
            }
            for _ in 0..READ_BATCH {
                match tun.recv(&mut buf) {
                    Ok(n) => arrived.push((i, buf[..n].to_vec())),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", tun.name())),
                }
            }
        }
        let now = Instant::now();
        {
            let mut shapers = shared.lock();
            for (i, p) in arrived.drain(..) {
                shapers[i].push(now, p);
            }
            for (i, s) in shapers.iter_mut().enumerate() {
                while let Some(p) = s.poll(now) {
                    due[i].push(p);
                }
            }
        }
        for (i, packets) in due.iter_mut().enumerate() {
            let out = &tuns[1 - i];
            for p in packets.drain(..) {
                if out.send(&p).is_err() {
                    shared.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}
