//! Running the lab's tools (`ip`, `nft`) and the caller's commands with a
//! time limit, and the checks before anything is created: root, `ip`, `nft`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// How long one `ip`/`nft` call may take.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// `name` on PATH, else in /usr/sbin or /sbin (a non-login root shell may
/// lack them on PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The paths of `ip` and `nft`, or an error saying what is missing and how to get it.
pub fn preflight() -> anyhow::Result<(PathBuf, PathBuf)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "the network lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces, \
             and this process runs as uid {euid}: run the tests as root (CI does), e.g. \
             `sudo -E env PATH=\"$PATH\" cargo test -p pixelpass-testkit --test netlab`"
        );
    }
    let ip = find_program("ip").ok_or_else(|| {
        anyhow!(
            "the network lab needs `ip` (Debian package iproute2; scripts/setup.sh installs it)"
        )
    })?;
    let nft = find_program("nft").ok_or_else(|| {
        anyhow!("the network lab needs `nft` for the NAT router (Debian package nftables; scripts/setup.sh installs it)")
    })?;
    Ok((ip, nft))
}

/// A command line as one readable string, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run `cmd` to its end with `stdin` as its input, killed (by its PID) when
/// it takes longer than `timeout`. Output is collected, whatever the status.
pub fn output(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> anyhow::Result<Output> {
    let what = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{what}`"))?;
    let pid = child.id();
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Small inputs (a ruleset): the pipe buffer takes them whole.
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("cannot write the input of `{what}`"))?;
    }
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(r) => r.with_context(|| format!("cannot wait for `{what}`")),
        Err(_) => {
            // SAFETY: kill(2) on the PID of our own child, not yet reaped (the waiter holds it).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(anyhow!(
                "`{what}` took more than {timeout:?} and was killed"
            ))
        }
    };
    let _ = waiter.join();
    result
}

/// Run a lab tool: an error (with its stderr) unless it exits 0.
pub fn check(cmd: Command, stdin: Option<&str>) -> anyhow::Result<String> {
    let what = describe(&cmd);
    let out = output(cmd, stdin, TOOL_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let hint = if stderr.contains("Operation not permitted")
            || stderr.contains("Permission denied")
        {
            " (the lab needs CAP_SYS_ADMIN and CAP_NET_ADMIN: run as root outside a restricted container)"
        } else {
            ""
        };
        bail!("`{what}` failed ({}): {}{hint}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
