//! The thin-link lab for browsers (issue 16): a real `pixelpass host` in the
//! lab's `public`, a constrained viewer in `thin` whose ONLY way to it is the
//! user-space impaired link, and a clean viewer in `viewer` (the WAN
//! switch); headless Chromium (`browser/sampler.mjs`) on the player page in
//! each viewer namespace prints getStats once per second of its own clock.
//!
//! ```text
//!  thin 198.51.100.2 ══ impaired link ══ 198.51.100.1 public 203.0.113.10 ── wan ── 203.0.113.20 viewer
//!  (Chromium, sampler)  down: 40 ms, 2 % loss,       (pixelpass host,           (Chromium, sampler)
//!                             1.2 Mbit/s, 50-packet   HTTP 8860, WebRTC
//!                             drop-tail queue         UDP 8861 on 0.0.0.0)
//!                       up:   40 ms
//! ```
//!
//! The host binds its WebRTC socket to 0.0.0.0 and so offers every address
//! it has (203.0.113.10, 198.51.100.1, 127.0.0.1): `thin` can only reach
//! the link's, `viewer` only the WAN's, which each sample's selected
//! candidate pair shows. [`LinkState`] names the link settings of the
//! issue's scenario; [`script`] runs one against the viewers and changes the
//! link when the constrained viewer's sample count reaches a phase's start
//! (so phases are counted in Chromium's seconds, not the test's clock).
//!
//! Everything started here is a child the lab keeps: dropped with the lab
//! (SIGTERM by PID, SIGKILL after a grace, reaped), then its namespaces.

pub mod sample;
pub mod script;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::netlab::impair::{Direction, ImpairedLink, Impairment, LinkConfig, Rate};
use crate::netlab::{Lab, Node, PUBLIC};
use sample::Sample;

pub const HTTP_PORT: u16 = 8860;
pub const WEBRTC_PORT: u16 = 8861;

/// The encode the lab's host runs unless told otherwise: layer 0 is 960×540
/// at 30 fps and 1.5 Mbit/s, so the ¼-rate half-size layer 1 (~375 kbit/s)
/// fits the 1.2 Mbit/s link and layer 0 (~1.6 Mbit/s with headers and
/// audio) does not. Cheap enough that the host and two Chromiums share 2
/// cores. At 2 Mbit/s, going back up after the cap is lifted took 6–15 s:
/// on a link that keeps its 2 % loss, str0m's GCC climbs from the cap by
/// about 30 % per 5 s (its probes are held back while the loss-based
/// controller holds), so the bar of 10 s depends on how far above the cap
/// layer 0 is.
pub const DEFAULT_HOST_ARGS: &[&str] = &[
    "--source",
    "test",
    "--framerate",
    "30",
    "--width",
    "960",
    "--height",
    "540",
    "--bitrate",
    "1500",
];

/// The link settings of the issue's scenario. Each way is its own shaper;
/// "down" is server → constrained viewer, "up" the way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// No delay, no loss, no cap.
    Clean,
    /// 80 ms RTT (40 ms each way), 2 % loss downstream only, 1.2 Mbit/s
    /// downstream with a 50-packet drop-tail queue (~400 ms of 1200-byte
    /// packets); upstream (RTCP) only delayed.
    Thin,
    /// [`LinkState::Thin`] with the cap lifted: 80 ms RTT, 2 % loss down.
    Lifted,
    /// 80 ms RTT and 10 % loss downstream, no cap.
    Burst,
    /// [`LinkState::Thin`] with a cap of [`LinkState::STARVED_RATE_BPS`]:
    /// room for the sound, not for the lowest layer's picture.
    Starved,
    /// [`LinkState::Thin`] with a cap of [`LinkState::NARROW_RATE_BPS`]:
    /// room for a third layer (150 kbit/s) and the sound, not for layer 1.
    Narrow,
}

impl LinkState {
    pub const THIN_RATE_BPS: u64 = 1_200_000;
    pub const STARVED_RATE_BPS: u64 = 200_000;
    pub const NARROW_RATE_BPS: u64 = 400_000;
    pub const THIN_QUEUE_PACKETS: usize = 50;
    const ONE_WAY: Duration = Duration::from_millis(40);

    pub fn name(self) -> &'static str {
        match self {
            LinkState::Clean => "clean",
            LinkState::Thin => "thin",
            LinkState::Lifted => "lifted",
            LinkState::Burst => "burst",
            LinkState::Starved => "starved",
            LinkState::Narrow => "narrow",
        }
    }

    /// What the server's packets to the constrained viewer meet.
    pub fn down(self) -> Impairment {
        // The thin link's delay, 2 % loss and queue, capped at `bps`.
        let capped = |bps| {
            Impairment::delay(Self::ONE_WAY)
                .with_loss(0.02)
                .with_rate(Rate::bits_per_sec(bps))
                .with_queue_limit(Self::THIN_QUEUE_PACKETS)
        };
        match self {
            LinkState::Clean => Impairment::NONE,
            LinkState::Thin => capped(Self::THIN_RATE_BPS),
            LinkState::Lifted => Impairment::delay(Self::ONE_WAY).with_loss(0.02),
            LinkState::Burst => Impairment::delay(Self::ONE_WAY).with_loss(0.10),
            LinkState::Starved => capped(Self::STARVED_RATE_BPS),
            LinkState::Narrow => capped(Self::NARROW_RATE_BPS),
        }
    }

    /// What the constrained viewer's packets (RTCP, STUN, HTTP requests) meet.
    pub fn up(self) -> Impairment {
        match self {
            LinkState::Clean => Impairment::NONE,
            _ => Impairment::delay(Self::ONE_WAY),
        }
    }
}

/// The host's arguments for the lab: `PIXELPASS_THIN_HOST_ARGS`
/// (whitespace-separated) or [`DEFAULT_HOST_ARGS`], plus `--layers 2` when
/// `pixelpass host --help` knows that option and they do not say it.
pub fn host_args(pixelpass: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = match std::env::var("PIXELPASS_THIN_HOST_ARGS") {
        Ok(a) if !a.trim().is_empty() => a.split_whitespace().map(str::to_string).collect(),
        _ => DEFAULT_HOST_ARGS.iter().map(|s| s.to_string()).collect(),
    };
    if host_has_layers(pixelpass) && !args.iter().any(|a| a == "--layers") {
        args.extend(["--layers".to_string(), "2".to_string()]);
    }
    args
}

/// Whether this `pixelpass host` takes `--layers`.
pub fn host_has_layers(pixelpass: &std::path::Path) -> bool {
    std::process::Command::new(pixelpass)
        .args(["host", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--layers"))
        .unwrap_or(false)
}

/// Whether this machine can run the thin-link lab: root (network
/// namespaces), Chromium, node and playwright-core. The error says what is
/// missing and how to get it.
pub fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("the thin-link lab needs root for network namespaces (this process runs as uid {euid}; CI runs as root)");
    }
    let chromium = chromium();
    if !chromium.is_file() {
        bail!(
            "Chromium is missing at {} (apt-get install chromium, or set CHROMIUM)",
            chromium.display()
        );
    }
    if crate::netlab::find_program("node").is_none() {
        bail!("node is missing (apt-get install nodejs npm; scripts/setup.sh does)");
    }
    let pw = browser_dir().join("node_modules/playwright-core");
    if !pw.is_dir() {
        bail!(
            "playwright-core is missing at {} (scripts/setup.sh runs `npm ci` there)",
            pw.display()
        );
    }
    Ok(())
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// The test kit's browser scripts.
pub fn browser_dir() -> PathBuf {
    crate::bin::kit_dir().join("browser")
}

/// Where a viewer watches from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// `thin`: only through the impaired link.
    Constrained,
    /// `viewer`: over the clean WAN switch.
    Clean,
}

impl Seat {
    pub fn node(self) -> Node {
        match self {
            Seat::Constrained => Node::Thin,
            Seat::Clean => Node::Viewer,
        }
    }
}

/// The lab, the link and the host. Field order is drop order: the link's
/// devices go before the lab deletes the namespaces.
pub struct ThinLab {
    link: ImpairedLink,
    lab: Lab,
    host_pid: u32,
    token: String,
    layer0_height: u32,
}

impl ThinLab {
    /// Build the lab and the link (in `initial` state), then start `pixelpass
    /// host --listen 0.0.0.0:8860 --webrtc-udp 0.0.0.0:8861 --json --linger 0
    /// --max-viewers 4 HOST_ARGS…` in `public`. `host_args` must say
    /// `--height` (layer 0's height, which the layer inference needs).
    pub fn start(
        pixelpass: &std::path::Path,
        host_args: &[String],
        initial: LinkState,
    ) -> anyhow::Result<ThinLab> {
        let layer0_height = host_args
            .windows(2)
            .find(|w| w[0] == "--height")
            .and_then(|w| w[1].parse::<u32>().ok())
            .ok_or_else(|| {
                anyhow!("the host arguments {host_args:?} must give --height (layer 0's height)")
            })?;
        let lab = Lab::new()?;
        let cfg = LinkConfig {
            a_to_b: initial.down(),
            b_to_a: initial.up(),
            ..LinkConfig::default()
        };
        let link = lab.impaired_link(Node::Public, Node::Thin, cfg)?;
        let mut cmd = lab.command(Node::Public, pixelpass);
        cmd.arg("host")
            .args(["--listen", &format!("0.0.0.0:{HTTP_PORT}")])
            .args(["--webrtc-udp", &format!("0.0.0.0:{WEBRTC_PORT}")])
            .args(["--json", "--linger", "0", "--max-viewers", "4"])
            .args(host_args)
            .env(
                "PIXELPASS_LOG",
                std::env::var("PIXELPASS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let spawned = lab.spawn(cmd)?;
        let host_pid = spawned.pid;
        let out = spawned
            .stdout
            .ok_or_else(|| anyhow!("the host's stdout is not piped"))?;
        let line = crate::tools::first_line(out, Duration::from_secs(30)).ok_or_else(|| {
            anyhow!("pixelpass host printed no banner within 30 s (its log is above)")
        })?;
        let banner: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("the host's banner {line:?}"))?;
        let token = banner["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in the host's banner {line}"))?
            .to_string();
        Ok(ThinLab {
            link,
            lab,
            host_pid,
            token,
            layer0_height,
        })
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    pub fn link(&self) -> &ImpairedLink {
        &self.link
    }

    pub fn layer0_height(&self) -> u32 {
        self.layer0_height
    }

    /// Put the link in `state`, both ways, from now on.
    pub fn set_link(&self, state: LinkState) -> anyhow::Result<()> {
        self.link.set(Direction::AToB, state.down())?;
        self.link.set(Direction::BToA, state.up())?;
        Ok(())
    }

    /// The address a seat reaches the host at.
    pub fn host_addr(&self, seat: Seat) -> Ipv4Addr {
        match seat {
            Seat::Constrained => self.link.a_addr(),
            Seat::Clean => PUBLIC,
        }
    }

    /// The player page as `seat` opens it.
    pub fn page_url(&self, seat: Seat) -> String {
        format!(
            "http://{}:{HTTP_PORT}/{}/",
            self.host_addr(seat),
            self.token
        )
    }

    /// The server address a seat's media must come from (its candidate pair).
    pub fn media_addr(&self, seat: Seat) -> String {
        format!("{}:{WEBRTC_PORT}", self.host_addr(seat))
    }

    /// Whether the host still runs (None: it exited with that status).
    pub fn host_exited(&self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.lab.try_wait(self.host_pid)
    }

    /// Start headless Chromium on the page in `seat`'s namespace, sampling
    /// `samples` times.
    pub fn open_viewer(&self, seat: Seat, samples: u32) -> anyhow::Result<Viewer> {
        let mut cmd = self.lab.command(seat.node(), "node");
        cmd.arg(browser_dir().join("sampler.mjs"))
            .args([
                "--url",
                &self.page_url(seat),
                "--samples",
                &samples.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let spawned = self.lab.spawn(cmd)?;
        let out = spawned
            .stdout
            .ok_or_else(|| anyhow!("the sampler's stdout is not piped"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("sampler-{seat:?}"))
            .spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the sampler's reader thread")?;
        Ok(Viewer {
            seat,
            pid: spawned.pid,
            lines,
            chromium: None,
        })
    }

    /// Stop a viewer's browser now (by its PID; the lab reaps it).
    pub fn close_viewer(&self, v: &Viewer) {
        if let Err(e) = self.lab.stop(v.pid) {
            eprintln!("thin-link lab: stopping the {:?} viewer: {e:#}", v.seat);
        }
    }
}

/// A running sampler (Chromium on the player page).
pub struct Viewer {
    pub seat: Seat,
    pub pid: u32,
    lines: Receiver<String>,
    /// Chromium's version, once its "open" line came.
    pub chromium: Option<String>,
}

impl Viewer {
    /// The next sample within `timeout` (the sampler's other lines are
    /// noted; an error line or an exit is an error).
    pub fn next_sample(&mut self, timeout: Duration) -> anyhow::Result<Sample> {
        self.poll(timeout)?.ok_or_else(|| {
            anyhow!(
                "the {:?} viewer's sampler printed no sample within {timeout:?}",
                self.seat
            )
        })
    }

    /// A sample if one is waiting (never blocks).
    pub fn try_sample(&mut self) -> anyhow::Result<Option<Sample>> {
        self.poll(Duration::ZERO)
    }

    fn poll(&mut self, timeout: Duration) -> anyhow::Result<Option<Sample>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("the {:?} viewer's sampler exited early", self.seat)
                }
            };
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(_) => {
                    eprintln!("sampler {:?}: {line}", self.seat);
                    continue;
                }
            };
            if let Some(e) = v.get("error") {
                bail!(
                    "the {:?} viewer's sampler failed: {}",
                    self.seat,
                    e.as_str().unwrap_or_default()
                );
            }
            if v.get("event").and_then(|e| e.as_str()) == Some("open") {
                self.chromium = v["chromium"].as_str().map(str::to_string);
                continue;
            }
            return serde_json::from_value(v)
                .map(Some)
                .with_context(|| format!("the {:?} viewer's sample {line}", self.seat));
        }
    }
}
