//! Starting and ending FFmpeg so it can never outlive pixelpass.
//!
//! Three layers, because each one alone has a hole:
//! - the child gets its own process group, so [`terminate`] can signal FFmpeg *and* anything
//!   it started (a shell wrapper's children, helper processes) with one `kill(-pgid)`;
//! - `PR_SET_PDEATHSIG = SIGKILL` kills it when pixelpass dies without cleaning up
//!   (SIGKILL, OOM kill, panic=abort). Caveat: Linux fires it when the *thread* that forked
//!   exits, not the process. [`spawn`] must therefore run on a long-lived thread — a tokio
//!   worker or the main thread — and never inside `spawn_blocking`, whose threads exit
//!   after idling and would take FFmpeg with them. `block_in_place` on the spawning worker
//!   has the same effect (that thread joins the blocking pool). The signal only covers the
//!   direct child, which is enough for FFmpeg (it does not fork);
//! - `kill_on_drop(true)` as a last resort for the leader if a `Child` is dropped early.
//!
//! FFmpeg's `-progress pipe:3` output arrives on its own pipe (fd 3 in the child), so it
//! never mixes with the log on stderr or the MPEG-TS on stdout. The TS of layers 1.. (see
//! [`super::layers`]) comes on pipes of their own too: fd 4, 5 (`pipe:4`, `pipe:5`).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// The child's descriptor for `-progress pipe:3`.
pub const PROGRESS_FD: RawFd = 3;
/// The child's descriptor of the first extra TS pipe (layer 1's); layer i's is
/// `EXTRA_TS_FD + i - 1`.
pub const EXTRA_TS_FD: RawFd = 4;
/// At most this many extra TS pipes.
pub const MAX_EXTRA_TS: usize = 2;

/// A started child and its pipes.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    /// Also the process group id: the child leads its own group.
    pub pid: u32,
    /// MPEG-TS, when spawned with `ts_stdout`.
    pub stdout: Option<ChildStdout>,
    pub stderr: ChildStderr,
    /// The read end of the child's fd 3.
    pub progress: pipe::Receiver,
    /// The read ends of the extra TS pipes (fd 4, 5 in the child), blocking.
    pub extra_ts: Vec<OwnedFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{} not found on PATH: apt-get install ffmpeg", program.to_string_lossy())]
    NotFound { program: OsString },
    #[error("cannot start {}: {source}", program.to_string_lossy())]
    Spawn {
        program: OsString,
        source: io::Error,
    },
    #[error("cannot create the progress pipe for {}: {source} (too many open files?)", program.to_string_lossy())]
    Pipe {
        program: OsString,
        source: io::Error,
    },
}

/// A pipe whose both ends are close-on-exec, so children spawned concurrently for other
/// streams do not inherit (and hold open) this stream's progress pipe.
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs in the forked child before exec: only async-signal-safe calls, no allocation.
/// `writes[i]` becomes the child's fd `PROGRESS_FD + i` (3: progress, 4.. extra TS).
fn child_setup(parent: libc::pid_t, writes: &[RawFd]) -> io::Result<()> {
    // SAFETY: plain syscalls on values owned by this (single-threaded) forked child.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died between fork and prctl: then no signal will ever come.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        // Every source first moves above the targets (its copy close-on-exec), so
        // placing one never overwrites another still to be placed.
        let mut high = [-1 as RawFd; 1 + MAX_EXTRA_TS];
        for (slot, &fd) in high.iter_mut().zip(writes) {
            *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 16);
            if *slot < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for (i, &fd) in high.iter().take(writes.len()).enumerate() {
            // dup2's copy is not close-on-exec: it survives exec.
            if libc::dup2(fd, PROGRESS_FD + i as RawFd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Starts `program args` in its own process group with the progress pipe on fd 3, stdin
/// from /dev/null, stderr piped and stdout piped only when `ts_stdout`.
/// Must be called inside a tokio runtime, on a long-lived thread (see the module docs).
pub fn spawn(program: &OsStr, args: &[String], ts_stdout: bool) -> Result<Spawned, SpawnError> {
    spawn_with(program, args, ts_stdout, 0)
}

/// [`spawn`] with `extra_ts` (at most [`MAX_EXTRA_TS`]) more pipes on the
/// child's fd 4, 5…, for the TS of layers 1...
pub fn spawn_with(
    program: &OsStr,
    args: &[String],
    ts_stdout: bool,
    extra_ts: usize,
) -> Result<Spawned, SpawnError> {
    let owned = || program.to_os_string();
    let (read_end, write_end) = cloexec_pipe().map_err(|source| SpawnError::Pipe {
        program: owned(),
        source,
    })?;
    let progress = pipe::Receiver::from_owned_fd(read_end).map_err(|source| SpawnError::Pipe {
        program: owned(),
        source,
    })?;
    let mut extra_reads = Vec::new();
    let mut extra_writes = Vec::new();
    for _ in 0..extra_ts.min(MAX_EXTRA_TS) {
        let (r, w) = cloexec_pipe().map_err(|source| SpawnError::Pipe {
            program: owned(),
            source,
        })?;
        extra_reads.push(r);
        extra_writes.push(w);
    }
    let parent = std::process::id() as libc::pid_t;
    let mut writes = [-1 as RawFd; 1 + MAX_EXTRA_TS];
    writes[0] = write_end.as_raw_fd();
    for (slot, w) in writes[1..].iter_mut().zip(&extra_writes) {
        *slot = w.as_raw_fd();
    }
    let count = 1 + extra_writes.len();

    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(if ts_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: child_setup only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || child_setup(parent, &writes[..count]));
    }
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => SpawnError::NotFound { program: owned() },
        _ => SpawnError::Spawn {
            program: owned(),
            source,
        },
    })?;
    // Else the pipes never report EOF when the child exits.
    drop(write_end);
    drop(extra_writes);

    let missing = |what: &str| SpawnError::Spawn {
        program: owned(),
        source: io::Error::other(format!("no {what} after spawn")),
    };
    let (Some(pid), Some(stderr)) = (child.id(), child.stderr.take()) else {
        if let Some(pid) = child.id() {
            signal_group(pid, libc::SIGKILL);
        }
        return Err(missing("pid or stderr"));
    };
    Ok(Spawned {
        stdout: child.stdout.take(),
        child,
        pid,
        stderr,
        progress,
        extra_ts: extra_reads,
    })
}

/// Sends `signal` to process group `pgid`. Refuses pgid 0/1 and values that are not
/// valid pids, so a bug can never turn into `kill(0)` (our own group) or `kill(-1)`.
fn signal_group(pgid: u32, signal: libc::c_int) -> bool {
    match libc::pid_t::try_from(pgid) {
        // SAFETY: kill has no memory-safety preconditions.
        Ok(pgid) if pgid > 1 => unsafe { libc::kill(-pgid, signal) == 0 },
        _ => false,
    }
}

/// Ends a child started by [`spawn`]: SIGTERM to its whole group (FFmpeg then finishes its
/// outputs cleanly), up to `grace` to exit, then SIGKILL to the group, then reaping.
///
/// `pid` must be the one [`spawn`] returned for this `child`; the group is only signalled
/// while the child is still ours (not yet reaped: `child.id()` is still `Some(pid)`).
/// After reaping, one more SIGKILL goes to the group to catch members that ignored
/// SIGTERM: Linux keeps a pid number reserved while any process still uses it as its
/// group id, so that signal reaches our stragglers or nobody.
pub async fn terminate(child: &mut Child, pid: u32, grace: Duration) -> io::Result<ExitStatus> {
    if child.id() != Some(pid) {
        return child.wait().await; // already reaped: the status is cached, signal nothing
    }
    if !signal_group(pid, libc::SIGTERM) {
        // Not a group leader after all (not started by `spawn`): at least end the child.
        // SAFETY: `pid` is our unreaped child, so the number cannot have been reused.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status?,
        Err(_elapsed) => {
            signal_group(pid, libc::SIGKILL);
            let _ = child.start_kill(); // the leader directly, in case the group signal failed
            child.wait().await?
        }
    };
    signal_group(pid, libc::SIGKILL);
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::Instant;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    const BOUND: Duration = Duration::from_secs(5);

    fn sh(script: &str, ts_stdout: bool) -> Spawned {
        spawn(
            OsStr::new("sh"),
            &["-c".to_string(), script.to_string()],
            ts_stdout,
        )
        .unwrap()
    }

    async fn first_progress_line(s: &mut Spawned) -> String {
        let mut line = String::new();
        let mut reader = BufReader::new(&mut s.progress);
        tokio::time::timeout(BOUND, reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        line.trim_end().to_string()
    }

    /// "Gone" for a pid we cannot reap ourselves: absent, or a zombie awaiting its reaper.
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    fn wait_gone(pid: u32) -> bool {
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline {
            if gone(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[tokio::test]
    async fn progress_pipe_is_fd_3_and_sigterm_ends_the_child() {
        let mut s = sh("echo progress=end >&3; sleep 30", false);
        assert!(s.stdout.is_none());
        assert_eq!(first_progress_line(&mut s).await, "progress=end");
        let started = Instant::now();
        let status = terminate(&mut s.child, s.pid, BOUND).await.unwrap();
        assert!(started.elapsed() < BOUND);
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        let rc = unsafe { libc::kill(s.pid as libc::pid_t, 0) };
        assert_eq!(
            (rc, io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ESRCH))
        );
        // The write end was closed in the parent, so the pipe now reports EOF.
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, s.progress.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn stdin_is_null_and_stdout_is_piped_on_request() {
        let mut s = sh("cat; echo ts-bytes", true);
        let mut out = String::new();
        let mut stdout = s.stdout.take().unwrap();
        tokio::time::timeout(BOUND, stdout.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, "ts-bytes\n");
        assert!(s.child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn extra_ts_pipes_are_fd_4_and_5_and_end_with_the_child() {
        let script = "echo progress >&3; echo layer1 >&4; echo layer2 >&5; echo main";
        let mut s = spawn_with(
            OsStr::new("sh"),
            &["-c".to_string(), script.to_string()],
            true,
            2,
        )
        .unwrap();
        assert_eq!(s.extra_ts.len(), 2);
        let reads: Vec<_> = s
            .extra_ts
            .drain(..)
            .map(|fd| {
                std::thread::spawn(move || {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text)
                        .map(|_| text)
                })
            })
            .collect();
        assert_eq!(first_progress_line(&mut s).await, "progress");
        let mut out = String::new();
        let mut stdout = s.stdout.take().unwrap();
        tokio::time::timeout(BOUND, stdout.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, "main\n");
        assert!(s.child.wait().await.unwrap().success());
        // EOF once the child is gone: no copy of a write end stayed here.
        let got: Vec<String> = reads
            .into_iter()
            .map(|r| r.join().unwrap().unwrap())
            .collect();
        assert_eq!(got, ["layer1\n", "layer2\n"]);
    }

    #[tokio::test]
    async fn child_ignoring_sigterm_is_killed_after_grace() {
        let mut s = sh("trap '' TERM; echo ready >&3; sleep 30", false);
        assert_eq!(first_progress_line(&mut s).await, "ready");
        let grace = Duration::from_millis(300);
        let started = Instant::now();
        let status = terminate(&mut s.child, s.pid, grace).await.unwrap();
        let took = started.elapsed();
        assert!(took >= grace && took < BOUND, "took {took:?}");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn grandchildren_in_the_group_are_killed_too() {
        let mut s = sh("sleep 30 & echo $! >&3; wait", false);
        let grandchild: u32 = first_progress_line(&mut s).await.parse().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap();
        let pgrp = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(2)
            .unwrap();
        assert_eq!(
            pgrp,
            s.pid.to_string(),
            "grandchild should share the child's group"
        );
        terminate(&mut s.child, s.pid, BOUND).await.unwrap();
        assert!(wait_gone(grandchild), "grandchild {grandchild} survived");
    }

    #[tokio::test]
    async fn child_that_already_exited_reports_its_status() {
        let mut s = sh("exit 3", false);
        // EOF on fd 3 means the child has exited (it is a zombie, not yet reaped).
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, s.progress.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let status = terminate(&mut s.child, s.pid, BOUND).await.unwrap();
        assert_eq!(status.code(), Some(3));
        // A second call must not signal anything and returns the cached status.
        assert_eq!(
            terminate(&mut s.child, s.pid, BOUND).await.unwrap().code(),
            Some(3)
        );
    }

    #[tokio::test]
    async fn missing_program_says_how_to_install_ffmpeg() {
        let err = spawn(OsStr::new("pixelpass-test-no-such-ffmpeg"), &[], false).unwrap_err();
        assert!(matches!(err, SpawnError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            "pixelpass-test-no-such-ffmpeg not found on PATH: apt-get install ffmpeg"
        );
    }

    #[test]
    fn group_signals_refuse_our_own_group_and_init() {
        assert!(!signal_group(0, 0));
        assert!(!signal_group(1, 0));
        assert!(!signal_group(u32::MAX, 0));
    }

    /// The PDEATHSIG caveat, demonstrated: the child dies when the thread that spawned it
    /// exits, even though the process (and the `Child` handle) live on.
    #[test]
    fn child_dies_with_the_thread_that_spawned_it() {
        let (child, pid) = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let s = rt.block_on(async { sh("exec sleep 30", false) });
            (s.child, s.pid)
        })
        .join()
        .unwrap();
        assert!(wait_gone(pid), "child {pid} outlived its spawning thread");
        // Reap the zombie ourselves; the Child's runtime is gone, so keep tokio out of it.
        let mut status = 0;
        assert_eq!(
            unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) },
            pid as libc::pid_t
        );
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        std::mem::forget(child);
    }
}
