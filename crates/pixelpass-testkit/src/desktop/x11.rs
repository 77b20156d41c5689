//! X11 under Xvfb: a private X server, and a known picture shown full
//! screen on it.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Xvfb on a free display number, killed (by PID) when dropped.
pub struct Xvfb {
    child: Child,
    pub display: String,
}

impl Xvfb {
    pub fn start(w: u32, h: u32) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                &format!("{w}x{h}x24"),
                "-nolisten",
                "tcp",
                "-nolisten",
                "unix",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs (apt-get install xvfb)");
        // -nolisten unix still leaves the abstract socket, which is all clients need.
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut b = [0u8; 1];
            while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
                s.push(b[0] as char);
            }
            let _ = tx.send(s);
        });
        let n = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("Xvfb tells its display number");
        Xvfb {
            child,
            display: format!(":{}", n.trim()),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SMPTE 75 % bars at `w`×`h` in a window at 0,0 of `x`'s screen, shown
/// once this returns (the pipeline prerolled); the caller ends it.
pub fn show_smpte_bars(x: &Xvfb, w: u32, h: u32) -> Child {
    let mut picture = Command::new("gst-launch-1.0")
        .args(["videotestsrc", "pattern=smpte75", "!"])
        .arg(format!("video/x-raw,width={w},height={h},framerate=10/1"))
        .args([
            "!",
            "videoconvert",
            "!",
            "ximagesink",
            &format!("display={}", x.display),
        ])
        .env("DISPLAY", &x.display)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0");
    // Not live: the pipeline prerolls, i.e. the sink has shown the first frame.
    let out = picture.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("PREROLLED") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the picture is on the X screen");
    picture
}
