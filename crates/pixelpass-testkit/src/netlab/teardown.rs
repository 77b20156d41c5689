//! Taking a lab down, and labs that earlier test processes left behind when
//! they were killed before their `Drop` could run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::run;
use super::topology::{Node, SWITCH};

/// The namespaces `ip netns list` shows (names only).
pub fn list(ip: &Path) -> anyhow::Result<Vec<String>> {
    let mut cmd = Command::new(ip);
    cmd.args(["netns", "list"]);
    let out = run::check(cmd, None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The PID in a lab namespace name `pp<pid>-<n>-<node>`, if it is one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("pp")?;
    let mut parts = rest.splitn(3, '-');
    let pid: u32 = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    let node = parts.next()?;
    let known = Node::ALL.iter().any(|n| n.name() == node) || node == SWITCH;
    known.then_some(pid)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Delete the names of lab namespaces whose test process is gone. Only
/// names of this module's own pattern are touched; a live owner's lab is
/// left alone, and no process is signalled (whatever still runs inside
/// keeps its namespace, now nameless, until it exits).
pub fn sweep_stale(ip: &Path) -> anyhow::Result<Vec<String>> {
    let me = std::process::id();
    let mut swept = Vec::new();
    for name in list(ip)? {
        match owner_pid(&name) {
            Some(pid) if pid != me && !alive(pid) => {
                delete(ip, &name)?;
                swept.push(name);
            }
            _ => {}
        }
    }
    Ok(swept)
}

/// PIDs of processes whose network namespace is `name`.
fn pids_in(ip: &Path, name: &str) -> anyhow::Result<Vec<i32>> {
    let mut cmd = Command::new(ip);
    cmd.args(["netns", "pids", name]);
    let out = run::check(cmd, None)?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Processes still inside a lab namespace (started in it by the test, but
/// not kept by the lab) would keep it alive after `ip netns del`: SIGKILL
/// each by PID, and wait (bounded) until none is left.
pub fn kill_stragglers(ip: &Path, name: &str) -> anyhow::Result<()> {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids: Vec<i32> = pids_in(ip, name)?
            .into_iter()
            .filter(|&p| p != me)
            .collect();
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("processes {pids:?} are still in network namespace {name} after SIGKILL");
        }
        for &pid in &pids {
            eprintln!("netlab: PID {pid} is still in {name} at teardown: SIGKILL");
            // SAFETY: kill(2); the PID was listed in a namespace that only this test's processes enter.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn delete(ip: &Path, name: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new(ip);
    cmd.args(["netns", "del", name]);
    run::check(cmd, None).map(drop)
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn only_lab_names_have_an_owner() {
        assert_eq!(owner_pid("pp123-4-home"), Some(123));
        assert_eq!(owner_pid("pp123-4-wan"), Some(123));
        assert_eq!(owner_pid("pp123-4-kitchen"), None);
        assert_eq!(owner_pid("pp123-home"), None);
        assert_eq!(owner_pid("ppx-4-home"), None);
        assert_eq!(owner_pid("docker-4-home"), None);
    }
}
