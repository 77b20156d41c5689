//! The benchmark's producer: replays an MPEG-TS sample into the hub in real
//! time, looping, the way the GStreamer ingest feeds it (one muxer burst per
//! video frame, then a flush).
//!
//! The sample is a real H.264 + AAC stream made by ffmpeg when it is
//! installed (x264 CBR at the requested bitrate, keyframe every 2 s), else a
//! synthetic TS (PAT/PMT + one video PID, random_access_indicator and PCR on
//! each frame's first packet, a keyframe every 2 s) at the requested bitrate.
//! Bursts are timed from the PCRs (interpolated by byte position), so the
//! replay runs at the sample's own pace.

use std::ops::Range;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::supervisor::{BoxFuture, Producer, ProducerError, Run, RunHandle};
use crate::ts::packet::{self, Packet, PACKET_LEN, PAT_PID, SYNC_BYTE};

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

/// Encode a real sample with ffmpeg (x264 CBR + AAC in MPEG-TS).
pub fn ffmpeg_ts(bitrate_kbps: u32, seconds: u32, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let path = std::env::temp_dir().join(format!("pixelpass-bench-{}.ts", std::process::id()));
    let rate = format!("{bitrate_kbps}k");
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
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
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-x264-params", "keyint=60:bframes=0"])
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

// ------------------------------------------------------------ synthetic TS

const SYN_PMT_PID: u16 = 0x1000;
const SYN_VIDEO_PID: u16 = 0x100;

/// CRC-32/MPEG-2 of a PSI section.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn psi_packet(pid: u16, mut section: Vec<u8>, cc: u8) -> Vec<u8> {
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    let mut p = vec![0xffu8; PACKET_LEN];
    p[..4].copy_from_slice(&[
        SYNC_BYTE,
        0x40 | (pid >> 8) as u8,
        pid as u8,
        0x10 | (cc & 0x0f),
    ]);
    p[4] = 0; // pointer field
    p[5..5 + section.len()].copy_from_slice(&section);
    p
}

fn pat(cc: u8) -> Vec<u8> {
    let len = 5 + 4 + 4; // header rest + one program + CRC
    let section = vec![
        0x00,
        0xb0,
        len as u8,
        0x00,
        0x01, // transport_stream_id
        0xc1, // version 0, current
        0x00,
        0x00,
        0x00,
        0x01, // program 1
        0xe0 | (SYN_PMT_PID >> 8) as u8,
        SYN_PMT_PID as u8,
    ];
    psi_packet(PAT_PID, section, cc)
}

fn pmt(cc: u8) -> Vec<u8> {
    let len = 9 + 5 + 4; // header rest + one stream + CRC
    let section = vec![
        0x02,
        0xb0,
        len as u8,
        0x00,
        0x01, // program 1
        0xc1,
        0x00,
        0x00,
        0xe0 | (SYN_VIDEO_PID >> 8) as u8,
        SYN_VIDEO_PID as u8, // PCR PID
        0xf0,
        0x00, // program_info_length 0
        packet::STREAM_TYPE_H264,
        0xe0 | (SYN_VIDEO_PID >> 8) as u8,
        SYN_VIDEO_PID as u8,
        0xf0,
        0x00,
    ];
    psi_packet(SYN_PMT_PID, section, cc)
}

fn pts_bytes(pts: u64, marker: u8) -> [u8; 5] {
    [
        (marker << 4) | (((pts >> 30) as u8 & 0x07) << 1) | 1,
        (pts >> 22) as u8,
        (((pts >> 15) as u8) << 1) | 1,
        (pts >> 7) as u8,
        ((pts as u8) << 1) | 1,
    ]
}

/// A synthetic TS: `fps` video frames per second of about `bitrate_kbps`
/// each (whole packets), PAT+PMT and a keyframe every 2 s.
pub fn synthetic_ts(bitrate_kbps: u32, seconds: u32, fps: u32) -> Vec<u8> {
    let fps = fps.max(1);
    let per_frame = ((f64::from(bitrate_kbps) * 1000.0 / 8.0 / f64::from(fps) / PACKET_LEN as f64)
        .round() as usize)
        .max(1);
    let frames = seconds * fps;
    let gop = 2 * fps;
    let mut out = Vec::with_capacity(frames as usize * (per_frame + 2) * PACKET_LEN);
    let (mut cc_pat, mut cc_pmt, mut cc_v) = (0u8, 0u8, 0u8);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut fill = |buf: &mut [u8]| {
        for b in buf {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = (rng as u8) | 1; // never 0: no accidental start codes
        }
    };
    for f in 0..frames {
        let key = f % gop == 0;
        if key {
            out.extend_from_slice(&pat(cc_pat));
            out.extend_from_slice(&pmt(cc_pmt));
            cc_pat = (cc_pat + 1) & 0x0f;
            cc_pmt = (cc_pmt + 1) & 0x0f;
        }
        let pcr_base = u64::from(f) * 90_000 / u64::from(fps);
        for k in 0..per_frame {
            let mut p = [0u8; PACKET_LEN];
            p[0] = SYNC_BYTE;
            p[1] = (if k == 0 { 0x40 } else { 0 }) | (SYN_VIDEO_PID >> 8) as u8;
            p[2] = SYN_VIDEO_PID as u8;
            let mut at = 4;
            if k == 0 {
                p[3] = 0x30 | cc_v; // adaptation + payload
                p[4] = 7;
                p[5] = 0x10 | if key { 0x40 } else { 0 }; // PCR (+ random access)
                p[6] = (pcr_base >> 25) as u8;
                p[7] = (pcr_base >> 17) as u8;
                p[8] = (pcr_base >> 9) as u8;
                p[9] = (pcr_base >> 1) as u8;
                p[10] = ((pcr_base as u8 & 1) << 7) | 0x7e;
                p[11] = 0;
                at = 12;
                let pts = pcr_base + 9000; // 100 ms ahead of the PCR
                let mut pes = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5];
                pes.extend_from_slice(&pts_bytes(pts, 0x2));
                // An access unit delimiter-free H.264 start: IDR (5) or non-IDR slice (1).
                pes.extend_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }]);
                p[at..at + pes.len()].copy_from_slice(&pes);
                at += pes.len();
            } else {
                p[3] = 0x10 | cc_v;
            }
            fill(&mut p[at..]);
            cc_v = (cc_v + 1) & 0x0f;
            out.extend_from_slice(&p);
        }
    }
    out
}

// ------------------------------------------------------------ the producer

/// Replays a [`Sample`] into the hub (a [`Producer`] for the supervisor).
pub struct ReplayProducer {
    sample: Arc<Sample>,
    stats: Arc<ReplayStats>,
}

/// How well the replay kept its pace.
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub bursts: AtomicU64,
    /// Latest a burst went out after its due time (µs): a starved replay thread.
    pub max_late_us: AtomicU64,
}

impl ReplayProducer {
    pub fn new(sample: Arc<Sample>) -> Self {
        Self {
            sample,
            stats: Arc::new(ReplayStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<ReplayStats> {
        self.stats.clone()
    }
}

impl Producer for ReplayProducer {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        let sample = self.sample.clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            // No keyframes on demand: joins start on the cached GOP.
            hub.begin_run(None);
            let stop = Arc::new(AtomicBool::new(false));
            let (failures_tx, failures) = mpsc::unbounded_channel();
            let flag = stop.clone();
            let thread = std::thread::Builder::new()
                .name("pixelpass-replay".into())
                .spawn(move || {
                    replay(&hub, &sample, &flag, &stats);
                    drop(failures_tx);
                })
                .map_err(|e| ProducerError::new(format!("cannot start the replay thread: {e}")))?;
            Ok(Run {
                encoder: "replay".into(),
                failures,
                handle: Box::new(ReplayRun {
                    stop,
                    thread: Some(thread),
                }),
            })
        })
    }
}

/// A replay thread as a producer run: stop raises the flag and joins it.
/// Shared by the TS replay here and the RTP replay of `whep-fanout`.
pub(crate) struct ReplayRun {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl RunHandle for ReplayRun {
    fn stop(mut self: Box<Self>) -> BoxFuture<()> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take();
        Box::pin(async move {
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        })
    }
}

/// Push bursts at their due times, lap after lap, until `stop`.
fn replay(hub: &Hub, sample: &Sample, stop: &AtomicBool, stats: &ReplayStats) {
    let start = Instant::now();
    for lap in 0u32.. {
        let lap_start = start + sample.period * lap;
        for b in &sample.bursts {
            let due = lap_start + b.at;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
            }
            let now = Instant::now();
            let late = now.saturating_duration_since(due).as_micros() as u64;
            stats.max_late_us.fetch_max(late, Ordering::Relaxed);
            stats.bursts.fetch_add(1, Ordering::Relaxed);
            hub.push_ts(&sample.data[b.range.clone()], now);
            hub.flush_ts(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::{Chunker, Output};

    #[test]
    fn crc_of_a_known_pat() {
        // CRC-32/MPEG-2 check value.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn synthetic_ts_is_what_the_chunker_expects() {
        let ts = synthetic_ts(4000, 4, 30);
        assert_eq!(ts.len() % PACKET_LEN, 0);
        let mut chunker = Chunker::new();
        let mut out = Vec::new();
        chunker.push(&ts, &mut out);
        chunker.flush(&mut out);
        assert_eq!(chunker.video_pid(), Some(SYN_VIDEO_PID));
        let chunks: Vec<bool> = out
            .iter()
            .filter_map(|o| {
                if let Output::Chunk { key, .. } = o {
                    Some(*key)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(chunks.len(), 120, "one chunk per frame");
        let keys: Vec<usize> = chunks
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, vec![0, 60], "a keyframe every 2 s");
        assert!(out.iter().any(|o| matches!(o, Output::Psi(_))));
        // The bitrate is what was asked for, within a packet per frame.
        let bps = ts.len() as f64 * 8.0 / 4.0;
        assert!(
            (bps - 4_000_000.0).abs() < 30.0 * 8.0 * PACKET_LEN as f64,
            "{bps}"
        );
    }

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
