//! Reading what FFmpeg reports: `-progress` blocks and the tail of its log.
//!
//! Both are I/O-free so they can be tested with captured text; the supervisor feeds them
//! lines from the child's fd 3 and stderr. Progress drives stall detection and the status
//! API; the log tail explains to the operator why FFmpeg exited.

use serde::Serialize;

/// One `-progress` block. Values FFmpeg reports as `N/A` stay 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Progress {
    pub frame: u64,
    pub fps: f64,
    pub bitrate_kbps: f64,
    pub total_size: u64,
    pub out_time_s: f64,
    pub dup_frames: u64,
    pub drop_frames: u64,
    pub speed: f64,
    /// `progress=end`: FFmpeg finished writing its outputs (it is about to exit).
    pub ended: bool,
}

/// Push parser for `-progress` output: blocks of `key=value` lines closed by a
/// `progress=continue` or `progress=end` line.
#[derive(Debug, Default)]
pub struct ProgressParser {
    current: Progress,
}

fn number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn count(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

impl ProgressParser {
    /// Feeds one line (with or without its line ending); returns the block it completes.
    /// Unknown keys (such as `stream_0_0_q`) and malformed lines are ignored, so a newer
    /// FFmpeg adding keys cannot break supervision.
    pub fn push_line(&mut self, line: &str) -> Option<Progress> {
        let (key, value) = line.trim_end_matches(['\r', '\n']).split_once('=')?;
        let p = &mut self.current;
        match key.trim() {
            "frame" => p.frame = count(value).unwrap_or(0),
            "fps" => p.fps = number(value).unwrap_or(0.0),
            // "bitrate= 760.1kbits/s" or "bitrate=N/A"
            "bitrate" => {
                p.bitrate_kbps = number(value.trim().trim_end_matches("kbits/s")).unwrap_or(0.0)
            }
            "total_size" => p.total_size = count(value).unwrap_or(0),
            // FFmpeg's out_time_ms is in microseconds too (a long-standing misnomer); it can
            // be negative before the first packet.
            "out_time_us" | "out_time_ms" => {
                p.out_time_s = value
                    .trim()
                    .parse::<i64>()
                    .map_or(0.0, |us| us.max(0) as f64 / 1e6)
            }
            "dup_frames" => p.dup_frames = count(value).unwrap_or(0),
            "drop_frames" => p.drop_frames = count(value).unwrap_or(0),
            // "speed=17.4x", "speed=   0x", "speed=N/A"
            "speed" => p.speed = number(value.trim().trim_end_matches('x')).unwrap_or(0.0),
            "progress" => {
                let mut done = std::mem::take(&mut self.current);
                done.ended = value.trim() == "end";
                return Some(done);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Debian 12's ffmpeg 5.1 (`-progress pipe:3 -stats_period 1`, 2 s of
    /// testsrc2 + sine encoded to MPEG-TS): note the padded `bitrate=` and `speed=` values.
    const REAL_FFMPEG_5_1: &str =
        "frame=1\nfps=0.00\nstream_0_0_q=0.0\nbitrate=N/A\ntotal_size=0\n\
        out_time_us=0\nout_time_ms=0\nout_time=00:00:00.000000\ndup_frames=0\ndrop_frames=0\n\
        speed=   0x\nprogress=continue\nframe=60\nfps=0.00\nstream_0_0_q=-1.0\n\
        bitrate= 760.1kbits/s\ntotal_size=190068\nout_time_us=2000522\nout_time_ms=2000522\n\
        out_time=00:00:02.000522\ndup_frames=0\ndrop_frames=0\nspeed=17.4x\nprogress=end\n";

    fn parse_all(text: &str) -> Vec<Progress> {
        let mut parser = ProgressParser::default();
        text.lines().filter_map(|l| parser.push_line(l)).collect()
    }

    #[test]
    fn real_ffmpeg_output() {
        let blocks = parse_all(REAL_FFMPEG_5_1);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[0],
            Progress {
                frame: 1,
                ..Progress::default()
            }
        );
        assert_eq!(
            blocks[1],
            Progress {
                frame: 60,
                fps: 0.0,
                bitrate_kbps: 760.1,
                total_size: 190_068,
                out_time_s: 2.000522,
                dup_frames: 0,
                drop_frames: 0,
                speed: 17.4,
                ended: true,
            }
        );
    }

    #[test]
    fn variants_and_garbage() {
        let text = "frame=12\r\nfps=29.97\nbitrate=1234.5kbits/s\nspeed= 1.01x\nout_time_ms=1500000\n\
                    dup_frames=3\ndrop_frames=N/A\nnonsense\n=\ntotal_size=N/A\nprogress=continue\n";
        let [p] = parse_all(text)[..] else {
            panic!("one block expected")
        };
        assert_eq!(
            (p.frame, p.fps, p.bitrate_kbps, p.speed),
            (12, 29.97, 1234.5, 1.01)
        );
        assert_eq!(
            (
                p.out_time_s,
                p.dup_frames,
                p.drop_frames,
                p.total_size,
                p.ended
            ),
            (1.5, 3, 0, 0, false)
        );
    }

    #[test]
    fn blocks_do_not_leak_into_each_other_and_negative_time_is_zero() {
        let blocks =
            parse_all("frame=5\nspeed=2x\nprogress=continue\nout_time_us=-42\nprogress=continue\n");
        assert_eq!((blocks[0].frame, blocks[0].speed), (5, 2.0));
        assert_eq!(blocks[1], Progress::default());
    }
}
