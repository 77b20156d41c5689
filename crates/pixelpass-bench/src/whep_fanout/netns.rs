//! `--own-netns`: the whole bench (server and peers) in a network namespace
//! of its own, whose loopback hands what it receives to the peers' CPU
//! (receive packet steering, `rps_cpus`).
//!
//! Why: on the host's loopback a datagram's whole receive path (IP and UDP
//! receive, the socket queue, waking the peer that reads it) runs in the
//! sender's `sendmmsg`, on the server's CPU, and is counted as server CPU.
//! On a real network that work happens on the viewers' machines. With RPS
//! the server's CPU still pays for the send path and the hand-over to the
//! other CPU; the receive side moves to the peers' CPU, where the peers'
//! process pays for it (its CPU share grows by about what the server's
//! shrinks). Both figures are worth printing: the default keeps comparing
//! with earlier runs; this one is closer to what a server facing a network
//! spends.
//!
//! How: the bench (root) adds `pixelpass-bench-PID` with `ip netns add`,
//! brings its `lo` up and runs itself again inside (`ip netns exec`, which
//! also mounts the namespace's own `/sys`, so `rps_cpus` there is this
//! namespace's loopback), with `--in-netns` instead of `--own-netns`; the
//! inner run sets `rps_cpus` before it starts. The namespace has no other
//! interface and no route out; it is deleted when the inner run ends,
//! however it ends.

use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};

/// The loopback's receive queue of the namespace this process is in (the
/// one `ip netns exec` mounted).
const RPS_CPUS: &str = "/sys/class/net/lo/queues/rx-0/rps_cpus";

/// `rps_cpus`'s hex CPU mask for one CPU.
pub fn cpu_mask(cpu: usize) -> anyhow::Result<String> {
    if cpu >= 64 {
        bail!("--client-cpu {cpu}: the loopback's RPS mask is set for CPUs 0–63 only");
    }
    Ok(format!("{:x}", 1u64 << cpu))
}

/// Inside the namespace: steer the loopback's receive work to `cpu`.
pub fn steer_receive_to(cpu: usize) -> anyhow::Result<()> {
    let mask = cpu_mask(cpu)?;
    std::fs::write(RPS_CPUS, &mask).with_context(|| {
        format!(
            "cannot write {mask} to {RPS_CPUS} (--in-netns is for the bench's own re-run \
             inside the namespace --own-netns made; run with --own-netns, as root)"
        )
    })
}

/// The namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn add() -> anyhow::Result<Self> {
        let name = format!("pixelpass-bench-{}", std::process::id());
        ip(&["netns", "add", &name])
            .context("cannot add a network namespace for --own-netns (root is needed)")?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "bench: could not delete network namespace {}: {e:#} (delete it with \
                 `ip netns del {}`)",
                self.name, self.name
            );
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// This invocation's arguments with `--own-netns` turned into `--in-netns`.
pub fn inner_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| {
            if a == "--own-netns" {
                "--in-netns".into()
            } else {
                a
            }
        })
        .collect()
}

/// Run this bench again inside a namespace of its own; its exit code.
pub fn rerun_inside() -> anyhow::Result<ExitCode> {
    // Not /proc/self/exe: `ip` would run itself.
    let exe = std::env::current_exe().context("cannot find this executable to run it again")?;
    let ns = Netns::add()?;
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(exe)
        .args(inner_args(std::env::args_os().skip(1)))
        .status()
        .context("cannot run the bench inside its network namespace")?;
    drop(ns);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => bail!("the bench inside its network namespace was killed ({status})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_names_one_cpu_in_hex() {
        assert_eq!(cpu_mask(0).unwrap(), "1");
        assert_eq!(cpu_mask(1).unwrap(), "2");
        assert_eq!(cpu_mask(13).unwrap(), "2000");
        assert!(cpu_mask(64).is_err());
    }

    #[test]
    fn the_inner_run_gets_in_netns_and_keeps_the_rest() {
        let a = inner_args(["whep-fanout", "--own-netns", "--peers", "200"].map(Into::into));
        let want: Vec<std::ffi::OsString> = ["whep-fanout", "--in-netns", "--peers", "200"]
            .map(Into::into)
            .to_vec();
        assert_eq!(a, want);
    }
}
