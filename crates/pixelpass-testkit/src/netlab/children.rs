//! The processes a lab started and keeps: stopped by PID (SIGTERM, then
//! SIGKILL after a bound) and reaped, one by one or all at teardown.

use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// How long a child has between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long a SIGKILLed child may take to be reaped before we give up on it.
const KILL_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// What the caller gets back from `Lab::spawn`: the PID and the pipes it asked for.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

struct Kept {
    child: Child,
    what: String,
}

#[derive(Default)]
pub struct Children {
    kept: Mutex<Vec<Kept>>,
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the PID of a child we hold and have not reaped, so it
    // names that process (a zombie at worst), never a reused PID.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

impl Children {
    fn lock(&self) -> MutexGuard<'_, Vec<Kept>> {
        // A panic elsewhere while holding the list leaves it usable.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn keep(&self, mut child: Child, what: String) -> Spawned {
        let spawned = Spawned {
            pid: child.id(),
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        self.lock().push(Kept { child, what });
        spawned
    }

    /// PIDs of the kept children (exited or not, until reaped by `stop`/`wait`).
    pub fn pids(&self) -> Vec<u32> {
        self.lock().iter().map(|k| k.child.id()).collect()
    }

    fn take(&self, pid: u32) -> anyhow::Result<Kept> {
        let mut kept = self.lock();
        let i = kept
            .iter()
            .position(|k| k.child.id() == pid)
            .ok_or_else(|| {
                anyhow!("PID {pid} is not a child this lab keeps (already stopped or waited for?)")
            })?;
        Ok(kept.swap_remove(i))
    }

    /// The exit status if `pid` has ended (then it is reaped and forgotten).
    pub fn try_wait(&self, pid: u32) -> anyhow::Result<Option<ExitStatus>> {
        let mut kept = self.lock();
        let i = kept
            .iter()
            .position(|k| k.child.id() == pid)
            .ok_or_else(|| anyhow!("PID {pid} is not a child this lab keeps"))?;
        let status = kept[i]
            .child
            .try_wait()
            .with_context(|| format!("cannot wait for {}", kept[i].what))?;
        if status.is_some() {
            kept.swap_remove(i);
        }
        Ok(status)
    }

    /// Wait at most `timeout` for `pid` to end by itself (it stays kept if it does not).
    pub fn wait(&self, pid: u32, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait(pid)? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("PID {pid} did not exit within {timeout:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stop one child: SIGTERM, SIGKILL after [`TERM_GRACE`], reaped.
    pub fn stop(&self, pid: u32) -> anyhow::Result<ExitStatus> {
        let kept = self.take(pid)?;
        let mut left = stop_all(vec![kept]);
        match left.pop() {
            Some(Ok(status)) => Ok(status),
            Some(Err(e)) => Err(e),
            None => Err(anyhow!("PID {pid}: no status")),
        }
    }

    /// Stop every kept child (all signalled at once, so the bound is shared).
    pub fn stop_all(&self) -> Vec<anyhow::Result<ExitStatus>> {
        let kept = std::mem::take(&mut *self.lock());
        stop_all(kept)
    }
}

fn stop_all(mut kept: Vec<Kept>) -> Vec<anyhow::Result<ExitStatus>> {
    let mut results = Vec::new();
    for k in &kept {
        signal(k.child.id(), libc::SIGTERM);
    }
    for (sig, grace) in [(None, TERM_GRACE), (Some(libc::SIGKILL), KILL_GRACE)] {
        if let Some(sig) = sig {
            for k in &kept {
                signal(k.child.id(), sig);
            }
        }
        let deadline = Instant::now() + grace;
        while !kept.is_empty() {
            let mut i = 0;
            while i < kept.len() {
                match kept[i].child.try_wait() {
                    Ok(Some(status)) => {
                        kept.swap_remove(i);
                        results.push(Ok(status));
                    }
                    Ok(None) => i += 1,
                    Err(e) => {
                        let k = kept.swap_remove(i);
                        results.push(Err(anyhow!("cannot wait for {}: {e}", k.what)));
                    }
                }
            }
            if kept.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    for k in kept {
        results.push(Err(anyhow!(
            "{} (PID {}) was not reaped {:?} after SIGKILL (stuck in the kernel?)",
            k.what,
            k.child.id(),
            KILL_GRACE
        )));
    }
    results
}
