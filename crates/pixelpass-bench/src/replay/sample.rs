//! A TS sample (ffmpeg's, or any TS) cut into one burst per video frame,
//! timed from its PCRs.

use std::ops::Range;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::synthetic::synthetic_ts;
use pixelpass::media::ts::packet::{self, Packet, PACKET_LEN, PAT_PID, SYNC_BYTE};

const PCR_HZ: f64 = 27_000_000.0;
const SDT_PID: u16 = 0x11;

/// A TS sample cut into bursts with their send times.
#[derive(Debug)]
pub struct Sample {
    pub data: Vec<u8>,
    pub bursts: Vec<Burst>,
    /// One lap: the next lap's first burst goes out this long after this lap's.
    pub period: Duration,
    /// Where the sample came from, for the report.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    pub range: Range<usize>,
    /// Send time from the start of the lap.
    pub at: Duration,
}

impl Sample {
    /// Mean bitrate of the sample as replayed (bit/s).
    pub fn bitrate(&self) -> f64 {
        self.data.len() as f64 * 8.0 / self.period.as_secs_f64().max(1e-9)
    }

    /// A real sample from ffmpeg if possible, else a synthetic one.
    pub fn make(bitrate_kbps: u32, seconds: u32) -> Sample {
        match ffmpeg_ts(bitrate_kbps, seconds, Duration::from_secs(180)) {
            Ok(data) => match Sample::from_ts(data, f64::from(bitrate_kbps) * 1000.0) {
                Ok(mut s) => {
                    s.origin = format!("ffmpeg testsrc2 1280x720@30 x264 CBR {bitrate_kbps} kbit/s + AAC 128 kbit/s, {seconds} s loop");
                    return s;
                }
                Err(e) => {
                    eprintln!("bench: the ffmpeg sample is unusable ({e:#}); using a synthetic TS")
                }
            },
            Err(e) => eprintln!("bench: no ffmpeg sample ({e:#}); using a synthetic TS"),
        }
        let data = synthetic_ts(bitrate_kbps, seconds.max(2), 30);
        let mut s = Sample::from_ts(data, f64::from(bitrate_kbps) * 1000.0)
            .expect("the synthetic TS is well-formed");
        s.origin = format!(
            "synthetic TS {bitrate_kbps} kbit/s, 30 frames/s, keyframe every 2 s, {seconds} s loop"
        );
        s
    }

    /// Cut `data` into one burst per video frame (PSI just before a frame
    /// goes with it) and time the bursts from the PCRs, or from
    /// `fallback_bps` when the sample has fewer than two.
    pub fn from_ts(mut data: Vec<u8>, fallback_bps: f64) -> anyhow::Result<Sample> {
        data.truncate(data.len() / PACKET_LEN * PACKET_LEN);
        if data.is_empty() {
            bail!("empty TS");
        }
        let mut pmt_pid = None;
        let mut video_pid = None;
        let mut pcrs: Vec<(usize, u64)> = Vec::new();
        for (i, raw) in data.chunks_exact(PACKET_LEN).enumerate() {
            let pkt = Packet::new(raw)
                .with_context(|| format!("packet {i} does not start with the sync byte"))?;
            let pid = pkt.pid();
            if pid == PAT_PID && pkt.pusi() && pmt_pid.is_none() {
                pmt_pid = packet::psi_section(pkt.payload()).and_then(packet::pat_pmt_pid);
            } else if Some(pid) == pmt_pid && pkt.pusi() && video_pid.is_none() {
                video_pid = packet::psi_section(pkt.payload()).and_then(|s| {
                    packet::pmt_streams(s)
                        .into_iter()
                        .find(|(t, _)| *t == packet::STREAM_TYPE_H264)
                        .map(|(_, p)| p)
                });
            }
            if let Some(pcr) = pcr(raw) {
                if pcrs.last().is_none_or(|&(_, last)| pcr > last) {
                    pcrs.push((i * PACKET_LEN, pcr));
                }
            }
        }
        let video_pid = video_pid.context("no H.264 stream in the PMT")?;
        let psi = |pid: u16| pid == PAT_PID || Some(pid) == pmt_pid || pid == SDT_PID;

        let pids: Vec<(u16, bool)> = data
            .chunks_exact(PACKET_LEN)
            .map(|p| (pid_of(p), p[1] & 0x40 != 0))
            .collect();
        let mut starts = vec![0usize];
        for (i, &(pid, pusi)) in pids.iter().enumerate() {
            if pid == video_pid && pusi {
                let mut b = i;
                while b > *starts.last().unwrap_or(&0) && psi(pids[b - 1].0) {
                    b -= 1;
                }
                if b > *starts.last().unwrap_or(&0) {
                    starts.push(b);
                }
            }
        }
        let time = Timeline::new(&pcrs, fallback_bps);
        let mut bursts = Vec::with_capacity(starts.len());
        for (k, &s) in starts.iter().enumerate() {
            let end = starts.get(k + 1).map_or(data.len(), |&e| e * PACKET_LEN);
            bursts.push(Burst {
                range: s * PACKET_LEN..end,
                at: time.at(s * PACKET_LEN),
            });
        }
        let period = time.at(data.len());
        if period.is_zero() {
            bail!("the sample has no duration");
        }
        Ok(Sample {
            data,
            bursts,
            period,
            origin: String::new(),
        })
    }
}

fn pid_of(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// The PCR of a packet in 27 MHz units, if it carries one.
pub fn pcr(p: &[u8]) -> Option<u64> {
    if p.len() < 12 || p[0] != SYNC_BYTE || p[3] & 0x20 == 0 || p[4] < 7 || p[5] & 0x10 == 0 {
        return None;
    }
    let base = (u64::from(p[6]) << 25)
        | (u64::from(p[7]) << 17)
        | (u64::from(p[8]) << 9)
        | (u64::from(p[9]) << 1)
        | (u64::from(p[10]) >> 7);
    let ext = (u64::from(p[10] & 1) << 8) | u64::from(p[11]);
    Some(base * 300 + ext)
}

/// Byte position → send time: piecewise linear through the PCRs, the mean
/// rate outside them; starts at zero.
struct Timeline {
    points: Vec<(f64, f64)>,
    /// Seconds per byte outside the PCR points.
    slope: f64,
    origin: f64,
}

impl Timeline {
    fn new(pcrs: &[(usize, u64)], fallback_bps: f64) -> Self {
        let points: Vec<(f64, f64)> = pcrs
            .iter()
            .map(|&(pos, pcr)| (pos as f64, pcr as f64 / PCR_HZ))
            .collect();
        let (slope, points) = match (points.first(), points.last()) {
            (Some(a), Some(b)) if points.len() >= 2 && b.0 > a.0 => {
                ((b.1 - a.1) / (b.0 - a.0), points)
            }
            _ => (8.0 / fallback_bps.max(1.0), vec![(0.0, 0.0)]),
        };
        let mut t = Timeline {
            points,
            slope,
            origin: 0.0,
        };
        t.origin = t.raw(0.0);
        t
    }

    fn raw(&self, pos: f64) -> f64 {
        let p = &self.points;
        let first = p[0];
        let last = p[p.len() - 1];
        if pos <= first.0 {
            return first.1 - (first.0 - pos) * self.slope;
        }
        if pos >= last.0 {
            return last.1 + (pos - last.0) * self.slope;
        }
        let i = p.partition_point(|&(x, _)| x <= pos);
        let (a, b) = (p[i - 1], p[i]);
        a.1 + (pos - a.0) * (b.1 - a.1) / (b.0 - a.0)
    }

    fn at(&self, pos: usize) -> Duration {
        Duration::from_secs_f64((self.raw(pos as f64) - self.origin).max(0.0))
    }
}

/// How a sample is encoded (x264 CBR, no B-frames, + AAC in MPEG-TS).
#[derive(Debug, Clone)]
pub struct TsSpec {
    pub size: (u32, u32),
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub preset: String,
    /// Frames between keyframes.
    pub keyint: u32,
    /// `-profile:v` (x264 picks one when absent: ultrafast makes Constrained Baseline).
    pub profile: Option<String>,
}

impl TsSpec {
    /// The fan-out benchmarks' sample: 1280x720@30, ultrafast, a keyframe every 2 s.
    pub fn fanout(bitrate_kbps: u32) -> TsSpec {
        TsSpec {
            size: (1280, 720),
            fps: 30,
            bitrate_kbps,
            preset: "ultrafast".into(),
            keyint: 60,
            profile: None,
        }
    }
}

/// Encode a real sample with ffmpeg (x264 CBR + AAC in MPEG-TS).
pub fn ffmpeg_ts(bitrate_kbps: u32, seconds: u32, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    ffmpeg_ts_with(&TsSpec::fanout(bitrate_kbps), seconds, timeout)
}

/// Encode a sample as `spec` says.
pub fn ffmpeg_ts_with(spec: &TsSpec, seconds: u32, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let path = std::env::temp_dir().join(format!("pixelpass-bench-{}.ts", std::process::id()));
    let rate = format!("{}k", spec.bitrate_kbps);
    let (w, h) = spec.size;
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={w}x{h}:rate={}", spec.fps),
            "-f",
            "lavfi",
            "-i",
            "sine",
        ])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            &spec.preset,
            "-tune",
            "zerolatency",
        ])
        .args(spec.profile.iter().flat_map(|p| ["-profile:v", p.as_str()]))
        .args(["-x264-params", &format!("keyint={}:bframes=0", spec.keyint)])
        .args([
            "-b:v", &rate, "-minrate", &rate, "-maxrate", &rate, "-bufsize", "1M",
        ])
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "mpegts"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ffmpeg")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&path);
            bail!("ffmpeg took longer than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let data = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    if !status.success() {
        bail!("ffmpeg failed ({status}): {}", err.trim());
    }
    let data = data.context("cannot read ffmpeg's output")?;
    if data.len() < 100 * PACKET_LEN {
        bail!("ffmpeg wrote only {} bytes", data.len());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_is_read_back() {
        let ts = synthetic_ts(4000, 1, 30);
        let pcrs: Vec<u64> = ts.chunks_exact(PACKET_LEN).filter_map(pcr).collect();
        assert_eq!(pcrs.len(), 30);
        assert_eq!(pcrs[0], 0);
        assert_eq!(pcrs[3], 3 * 3000 * 300, "90 kHz base × 300");
        let mut no_af = [0u8; PACKET_LEN];
        no_af[0] = SYNC_BYTE;
        no_af[3] = 0x10;
        assert_eq!(pcr(&no_af), None);
    }

    #[test]
    fn bursts_are_frames_timed_by_pcr() {
        let s = Sample::from_ts(synthetic_ts(4000, 4, 30), 1.0).unwrap();
        assert_eq!(s.bursts.len(), 120);
        // PAT+PMT travel with the keyframe after them.
        assert_eq!(s.bursts[0].range.start, 0);
        assert_eq!(
            s.data[s.bursts[60].range.start + 1] & 0x1f,
            0,
            "burst 60 starts with the PAT"
        );
        for (k, b) in s.bursts.iter().enumerate() {
            let want = k as f64 / 30.0;
            assert!(
                (b.at.as_secs_f64() - want).abs() < 0.002,
                "burst {k} at {:?}",
                b.at
            );
        }
        let covered: usize = s.bursts.iter().map(|b| b.range.len()).sum();
        assert_eq!(covered, s.data.len());
        assert!(
            (s.period.as_secs_f64() - 4.0).abs() < 0.04,
            "{:?}",
            s.period
        );
        assert!(
            (s.bitrate() - 4_000_000.0).abs() < 80_000.0,
            "{}",
            s.bitrate()
        );
    }

    #[test]
    fn without_pcr_the_bitrate_paces() {
        // Strip the PCR flag from every packet.
        let mut ts = synthetic_ts(4000, 2, 30);
        for p in ts.chunks_exact_mut(PACKET_LEN) {
            if p[3] & 0x20 != 0 {
                p[5] &= !0x10;
            }
        }
        let s = Sample::from_ts(ts, 2_000_000.0).unwrap();
        assert!((s.bitrate() - 2_000_000.0).abs() < 1.0, "{}", s.bitrate());
        assert_eq!(s.bursts.len(), 60);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Sample::from_ts(vec![0u8; PACKET_LEN * 3], 1e6).is_err());
        assert!(Sample::from_ts(Vec::new(), 1e6).is_err());
    }
}
