//! Running external tools with a time limit (ffprobe, ffmpeg), temporary
//! capture directories, and the checks of a captured stream.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ts_scan::{scan_ts, trim_capture, TsScan};

#[derive(Debug)]
pub struct ToolOutput {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Run `cmd` with a time limit (killed, by its own PID, when over it).
pub fn run_tool(mut cmd: Command, timeout: Duration) -> ToolOutput {
    let t0 = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ToolOutput {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
        elapsed: t0.elapsed(),
    }
}

/// A directory for captures, removed on drop unless the test failed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "pixelpass-it-{}-{}-{}",
            name,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("captures kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// (codec_type, codec_name) of each stream, per `ffprobe -show_streams`.
pub fn ffprobe_streams(file: &Path) -> Vec<(String, String)> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(file);
    let out = run_tool(cmd, Duration::from_secs(60));
    assert!(
        out.success(),
        "ffprobe failed on {}: {}",
        file.display(),
        out.stderr
    );
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ffprobe JSON ({e}): {}", out.stdout));
    v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["codec_type"].as_str().unwrap_or("").to_string(),
                        s["codec_name"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Video frames ffprobe decodes from the first video stream.
pub fn count_video_frames(file: &Path) -> u64 {
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
    ])
    .arg(file);
    let out = run_tool(cmd, Duration::from_secs(120));
    assert!(
        out.success(),
        "ffprobe -count_frames failed on {}: {}",
        file.display(),
        out.stderr
    );
    // MPEG-TS streams are listed twice (under the program and on their own).
    out.stdout
        .lines()
        .map(|l| l.trim().trim_end_matches(','))
        .find(|l| !l.is_empty())
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("frame count {:?}", out.stdout))
}

/// A recorded file decodes cleanly, has at least `least` video frames, and
/// carries H.264 and AAC.
pub fn assert_recording_decodes(file: &Path, least: u64) {
    let errors = decode_errors(file);
    assert!(
        errors.is_empty(),
        "{file:?} does not decode cleanly: {errors}"
    );
    let frames = count_video_frames(file);
    assert!(
        frames >= least,
        "{file:?}: {frames} frames, at least {least} expected"
    );
    let streams = ffprobe_streams(file);
    assert!(
        streams.iter().any(|(t, c)| t == "video" && c == "h264"),
        "{file:?}: {streams:?}"
    );
    assert!(
        streams.iter().any(|(t, c)| t == "audio" && c == "aac"),
        "{file:?}: {streams:?}"
    );
}

/// What `ffmpeg -v error` says while decoding the whole file (empty = clean).
pub fn decode_errors(file: &Path) -> String {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"]);
    let out = run_tool(cmd, Duration::from_secs(120));
    let mut msg = out.stderr.trim().to_string();
    if !out.success() {
        msg.push_str(&format!("\n(ffmpeg exit status {:?})", out.status));
    }
    msg
}

/// Everything a test asserts about a capture: H.264 + AAC, clean decode, frames.
pub struct Checked {
    pub frames: u64,
    pub scan: TsScan,
    pub path: PathBuf,
}

pub fn check_capture(dir: &TempDir, name: &str, data: &[u8], min_frames: u64) -> Checked {
    let trimmed = trim_capture(data);
    assert!(
        !trimmed.is_empty(),
        "{name}: nothing to decode ({} bytes received)",
        data.len()
    );
    let path = dir.write(name, trimmed);
    let streams = ffprobe_streams(&path);
    assert!(
        streams.iter().any(|(t, c)| t == "video" && c == "h264"),
        "{name}: no H.264 video stream: {streams:?}"
    );
    assert!(
        streams.iter().any(|(t, c)| t == "audio" && c == "aac"),
        "{name}: no AAC audio stream: {streams:?}"
    );
    let errors = decode_errors(&path);
    assert!(
        errors.is_empty(),
        "{name}: ffmpeg reported decode errors:\n{errors}"
    );
    let frames = count_video_frames(&path);
    assert!(
        frames >= min_frames,
        "{name}: {frames} video frames decoded, want ≥ {min_frames} ({} bytes)",
        trimmed.len()
    );
    Checked {
        frames,
        scan: scan_ts(trimmed),
        path,
    }
}

/// The first line a child prints on `out` (its banner), within `within`; a
/// thread drains whatever follows so the child never blocks on a full pipe.
pub fn first_line<R: std::io::Read + Send + 'static>(out: R, within: Duration) -> Option<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(out).lines().map_while(Result::ok);
        if let Some(first) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    rx.recv_timeout(within).ok()
}

/// Give the child `cmd` starts this `RLIMIT_NOFILE` (soft and hard).
pub fn limit_nofile(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Open descriptors of process `pid` (`/proc/PID/fd`); `None` once it is gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}
