//! The Debian package and the files it installs, for `tests/package.rs`:
//! where `scripts/package.sh` put the .deb, a throw-away root to `dpkg -i`
//! it into, `systemd-analyze verify` of a unit, and running commands with
//! their output kept for the failure message.
//!
//! The throw-away root: `dpkg --root DIR --force-script-chrootless`. DIR's
//! dpkg database starts as a copy of this machine's (the status file; the
//! file lists hard-linked), so dpkg checks the package's Depends against
//! what is really installed here (scripts/setup.sh installs them) instead of
//! being told to ignore them; the maintainer scripts run for real, on this
//! machine, with `DPKG_ROOT=DIR` (they and systemd-sysusers honour it), and
//! DIR gets its own /etc/passwd. Other packages' triggers (man-db) are not
//! copied, so none of their scripts runs. A debootstrap root would also show
//! that the dependencies install from the archive, at minutes per run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::tools::{run_tool, TempDir, ToolOutput};

/// What a command printed, with its status; panics with both when it failed.
pub fn run_ok(cmd: Command, what: &str) -> ToolOutput {
    let out = run_tool(cmd, Duration::from_secs(120));
    assert!(
        out.success(),
        "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

/// The .deb `scripts/package.sh` made for `version`: `$PIXELPASS_DEB`, else
/// `target/debian/pixelpass_VERSION-1_*.deb` under `repo` (or
/// `$CARGO_TARGET_DIR`). `None` when there is none.
pub fn find_deb(repo: &Path, version: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PIXELPASS_DEB") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let prefix = format!("pixelpass_{version}-1_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(target.join("debian"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// `systemd-analyze [--user] verify UNIT` with the unit's `/usr/bin/pixelpass`
/// replaced by `binary` (verify checks that the command is executable) and
/// `MANPATH=man_dir` (it checks `Documentation=man:…` too). Returns the
/// warnings: empty when the unit is accepted as it is.
pub fn systemd_verify(unit: &Path, user: bool, binary: &Path, man_dir: &Path) -> String {
    let dir = TempDir::new("systemd-verify");
    let text =
        std::fs::read_to_string(unit).unwrap_or_else(|e| panic!("read {}: {e}", unit.display()));
    let name = unit
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("a unit file name: {}", unit.display()));
    // packaging/pixelpass.pixelpass-serve.service is installed as pixelpass-serve.service.
    let name = name.strip_prefix("pixelpass.").unwrap_or(name);
    let copy = dir.write(
        name,
        text.replace("/usr/bin/pixelpass", &binary.display().to_string())
            .as_bytes(),
    );
    let runtime = dir.0.join("runtime");
    std::fs::create_dir_all(&runtime).expect("a runtime dir");
    let mut cmd = Command::new("systemd-analyze");
    if user {
        // The user manager needs a runtime directory of its own.
        cmd.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
    }
    cmd.arg("verify").arg(&copy).env("MANPATH", man_dir);
    let out = run_tool(cmd, Duration::from_secs(60));
    let mut problems = out.stderr.trim().to_owned();
    if !out.success() {
        problems.push_str(&format!("\n(exit {:?}) {}", out.status, out.stdout));
    }
    problems
}

/// A directory to install the package into, with a copy of this machine's
/// dpkg database (see the module's comment). Removed on drop unless the test
/// failed.
pub struct ThrowawayRoot {
    pub dir: TempDir,
}

impl ThrowawayRoot {
    pub fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let admin = dir.0.join("var/lib/dpkg");
        for sub in ["updates", "triggers", "info"] {
            std::fs::create_dir_all(admin.join(sub)).expect("the dpkg database dirs");
        }
        std::fs::copy("/var/lib/dpkg/status", admin.join("status")).expect("copy dpkg status");
        std::fs::write(admin.join("available"), b"").expect("dpkg available");
        // The file lists (and only those: no other package's scripts), hard-linked.
        let lists = std::fs::read_dir("/var/lib/dpkg/info").expect("read /var/lib/dpkg/info");
        for entry in lists.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "list") {
                let to = admin.join("info").join(entry.file_name());
                if std::fs::hard_link(&path, &to).is_err() {
                    std::fs::copy(&path, &to).expect("copy a file list");
                }
            }
        }
        ThrowawayRoot { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.0.join(rel.trim_start_matches('/'))
    }

    /// `dpkg --root DIR --force-script-chrootless ARGS…`.
    pub fn dpkg(&self, args: &[&str]) -> ToolOutput {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", self.dir.0.display()))
            .arg("--force-script-chrootless")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_tool(cmd, Duration::from_secs(120))
    }

    /// `dpkg-query --root DIR ARGS…`.
    pub fn query(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("dpkg-query");
        cmd.arg(format!("--root={}", self.dir.0.display()))
            .args(args);
        run_ok(cmd, "dpkg-query").stdout
    }

    /// The numeric id of `name` in DIR's /etc/passwd (`group`: /etc/group).
    pub fn id_of(&self, file: &str, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string(self.path(file)).ok()?;
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| f.get(2).and_then(|id| id.parse().ok()))
    }
}
