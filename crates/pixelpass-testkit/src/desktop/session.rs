//! The headless Wayland session (`crates/pixelpass-testkit/session/headless-session.sh`) from
//! Rust: the script runs a command that writes the session's environment to a
//! file and then waits for its stdin to close. Tests start processes with that
//! environment; dropping the [`Session`] closes the pipe, the script tears the
//! session down (its children, by PID) and is reaped. If the test process
//! dies, the pipe closes all the same.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Session {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    env: BTreeMap<String, String>,
    /// The session's private directory (logs in `logs/`).
    pub dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    env_file: PathBuf,
}

fn script() -> PathBuf {
    crate::bin::kit_dir().join("session/headless-session.sh")
}

impl Session {
    /// Bring a session up with the script's `options` (e.g. `--no-client`).
    pub fn start(options: &[&str]) -> Session {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let env_file = std::env::temp_dir().join(format!(
            "pixelpass-session-env-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&env_file);
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .args(options)
            .arg("--")
            .args([
                "sh",
                "-c",
                "env -0 > \"$0.tmp\" && mv \"$0.tmp\" \"$0\" && exec cat >/dev/null",
            ])
            .arg(&env_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn headless-session.sh");
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut err = child.stderr.take().unwrap();
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut s = Session {
            child: Some(child),
            stdin,
            env: BTreeMap::new(),
            dir: PathBuf::new(),
            stderr,
            env_file,
        };
        let t0 = Instant::now();
        let raw = loop {
            if let Ok(raw) = std::fs::read(&s.env_file) {
                break raw;
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the headless session did not come up ({st}):\n{}",
                    s.stderr_text()
                );
            }
            if t0.elapsed() > Duration::from_secs(60) {
                panic!(
                    "the headless session did not come up within 60 s:\n{}",
                    s.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for kv in raw.split(|&b| b == 0).filter(|kv| !kv.is_empty()) {
            let kv = String::from_utf8_lossy(kv);
            if let Some((k, v)) = kv.split_once('=') {
                s.env.insert(k.to_owned(), v.to_owned());
            }
        }
        s.dir = PathBuf::from(
            s.env
                .get("PIXELPASS_SESSION_DIR")
                .expect("PIXELPASS_SESSION_DIR in the session"),
        );
        s
    }

    /// The environment inside the session (PATH and the rest included).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    pub fn var(&self, k: &str) -> Option<&str> {
        self.env.get(k).map(String::as_str)
    }

    /// Run `cmd` inside the session: exactly the session's environment.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env_clear().envs(&self.env)
    }

    /// A component's log so far (`xdpw`, `portal`, `sway`, ...).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// What the script said on stderr.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // EOF on the inner command's stdin: it exits, the script tears down.
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let t0 = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if t0.elapsed() < Duration::from_secs(15) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        // SIGTERM to the script (its trap tears the session down), then reap.
                        // SAFETY: kill(2) of our own unreaped child.
                        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                        let t1 = Instant::now();
                        while t1.elapsed() < Duration::from_secs(5) {
                            if let Ok(Some(_)) = child.try_wait() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&self.env_file);
        if std::thread::panicking() {
            eprintln!("--- headless session stderr ---\n{}", self.stderr_text());
        }
    }
}

impl Session {
    /// On a failing test: the portal logs, while the session still exists.
    pub fn dump_logs(&self) {
        for name in ["xdpw", "portal", "sway", "client"] {
            let log = self.log(name);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            eprintln!(
                "--- session log {name} (last lines) ---\n{}",
                tail.join("\n")
            );
        }
    }
}
