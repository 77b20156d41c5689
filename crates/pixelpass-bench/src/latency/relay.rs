//! `--path relay`: the WHEP viewer of `whep`, but through `pixelpass serve`
//! as a WHIP relay on loopback — host → WHIP → relay → WHEP → viewer — so
//! the row next to `whep` (host → viewer direct) is the relay hop's cost.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// The relay's stream: its id, viewer token and publish secret.
const ID: &str = "bench";
const VIEWER: &str = "bench-relay-viewer-token-01234567";
const SECRET: &str = "bench-relay-publish-secret-0123456";

/// A `pixelpass serve` child with one published stream; ended (by PID) and
/// reaped when dropped.
pub struct Relay {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
    dir: std::path::PathBuf,
}

impl Relay {
    pub fn start() -> anyhow::Result<Relay> {
        let dir =
            std::env::temp_dir().join(format!("pixelpass-bench-relay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nwebrtc_udp = \"127.0.0.1:0\"\napi_token = \"bench-relay-api\"\n\n\
                 [[stream]]\nid = \"{ID}\"\ntoken = \"{VIEWER}\"\npublish_token = \"{SECRET}\"\n"
            ),
        )
        .with_context(|| format!("write {}", config.display()))?;
        let mut child = Command::new(pixelpass_testkit::bin::try_pixelpass()?)
            .args(["serve", "--json", "--whip-udp", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start pixelpass serve (the relay)")?;
        let out = child.stdout.take().context("the relay's stdout")?;
        let first = pixelpass_testkit::tools::first_line(out, Duration::from_secs(30));
        let mut relay = Relay {
            child,
            base: String::new(),
            dir,
        };
        let line = first.context("the relay printed no banner within 30 s")?;
        let banner: serde_json::Value =
            serde_json::from_str(&line).context("the relay's banner")?;
        let listen = banner["listen"]
            .as_str()
            .context("the banner's listen address")?;
        relay.base = format!("http://{listen}");
        Ok(relay)
    }

    pub fn whip_url(&self) -> String {
        format!("{}/whip/{ID}", self.base)
    }

    pub fn whep_url(&self) -> String {
        format!("{}/{VIEWER}/whep", self.base)
    }

    pub fn secret(&self) -> String {
        SECRET.to_owned()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // SIGTERM (our own child, by PID), then reap; SIGKILL if it lingers.
        let pid = self.child.id() as libc::pid_t;
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
