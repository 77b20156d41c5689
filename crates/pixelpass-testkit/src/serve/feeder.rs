//! A publisher for `serve`'s inputs: an `ffmpeg` child that encodes a lavfi
//! test picture and tone and sends it somewhere (MPEG-TS over loopback UDP,
//! RTMP to a listening stream). Ended by its PID (SIGTERM, then SIGKILL) and
//! always reaped, also when a test panics.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// H.264 + AAC of a 640x360@30 test picture, one keyframe a second.
/// `b_frames`: 0 for WebRTC-playable H.264, 2 for an input `auto` must encode.
pub fn h264_aac_args(b_frames: u32) -> Vec<String> {
    let mut a: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "30",
        "-b:v",
        "1000k",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
    ]
    .map(String::from)
    .into();
    a.extend(["-bf".into(), b_frames.to_string()]);
    // 8x8 transforms make it High profile even at ultrafast, as cameras and OBS send.
    a.extend(["-x264-params".into(), "8x8dct=1".into()]);
    a
}

/// Ports this test process handed out already: two streams of one test (or
/// two tests running side by side) must not share one.
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Below Linux's ephemeral range (32768–60999 by default), so no socket the
/// kernel places itself (pixelpass's RTP pairs, a client's source port) can
/// take a port between the test choosing it and FFmpeg binding it.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port not handed out before that `bind` can take now (then released for FFmpeg).
fn fresh_port(bind: impl Fn(u16) -> std::io::Result<()>) -> u16 {
    let mut given = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for i in 0..1000u32 {
        let n = seed
            .wrapping_mul(2_654_435_761)
            .wrapping_add(i.wrapping_mul(7919));
        let port = (PORTS.start + n % (PORTS.end - PORTS.start)) as u16;
        if !given.contains(&port) && bind(port).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?} after 1000 tries");
}

/// A free loopback UDP port, never the same twice in this process.
pub fn free_udp_port() -> u16 {
    fresh_port(|p| UdpSocket::bind(("127.0.0.1", p)).map(drop))
}

/// A free loopback TCP port, never the same twice in this process.
pub fn free_tcp_port() -> u16 {
    fresh_port(|p| std::net::TcpListener::bind(("127.0.0.1", p)).map(drop))
}

/// Someone listens on TCP `port` (read from /proc/net/tcp and tcp6, so no
/// connection is made: FFmpeg's RTMP server takes exactly one).
pub fn tcp_listening(port: u16) -> bool {
    bound(&["/proc/net/tcp", "/proc/net/tcp6"], port, Some("0A"))
}

/// A UDP socket is bound to `port` (an SRT listener, say).
pub fn udp_bound(port: u16) -> bool {
    bound(&["/proc/net/udp", "/proc/net/udp6"], port, None)
}

fn bound(files: &[&str], port: u16, state: Option<&str>) -> bool {
    let want = format!(":{port:04X}");
    files.iter().any(|file| {
        std::fs::read_to_string(file).is_ok_and(|text| {
            text.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&want) && state.is_none_or(|s| f[3] == s)
            })
        })
    })
}

pub struct Feeder {
    child: Option<Child>,
}

impl Feeder {
    /// `ffmpeg <args>`; its output is discarded (errors go to the test's stderr).
    pub fn spawn(args: &[String]) -> Feeder {
        let child = Command::new("ffmpeg")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the ffmpeg publisher");
        Feeder { child: Some(child) }
    }

    /// Live MPEG-TS to `udp://127.0.0.1:port`.
    pub fn udp_ts(port: u16, b_frames: u32) -> Feeder {
        let mut args = h264_aac_args(b_frames);
        args.extend([
            "-f".into(),
            "mpegts".into(),
            format!("udp://127.0.0.1:{port}?pkt_size=1316"),
        ]);
        Feeder::spawn(&args)
    }

    /// RTMP (FLV) to `url`, as OBS would push it.
    pub fn rtmp(url: &str) -> Feeder {
        let mut args = h264_aac_args(0);
        args.extend(["-f".into(), "flv".into(), url.into()]);
        Feeder::spawn(&args)
    }

    /// MPEG-TS over SRT (caller) to `url`.
    pub fn srt(url: &str) -> Feeder {
        let mut args = h264_aac_args(0);
        args.extend(["-f".into(), "mpegts".into(), url.into()]);
        Feeder::spawn(&args)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Still running (not exited).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM by PID, SIGKILL after `grace`; reaped.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) of our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}
