//! UDP counters of a namespace (`/proc/net/snmp`, which is per network
//! namespace): `RcvbufErrors` counts datagrams the kernel dropped because a
//! socket's receive buffer was full.

use std::time::Duration;

use anyhow::{bail, Context};

use super::{Lab, Node};

/// One field of the `Udp:` lines of `/proc/net/snmp` (a header line of
/// names, then a line of values).
pub fn udp_counter(snmp: &str, field: &str) -> anyhow::Result<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no Udp: lines in /proc/net/snmp");
    };
    let at = names
        .split_whitespace()
        .position(|n| n == field)
        .with_context(|| format!("no {field} in {names:?}"))?;
    let value = values
        .split_whitespace()
        .nth(at)
        .with_context(|| format!("no value for {field} in {values:?}"))?;
    value
        .parse()
        .with_context(|| format!("{field} = {value:?} is not a number"))
}

impl Lab {
    /// `RcvbufErrors` of UDP in `node`'s namespace (read there, by `cat`
    /// under `ip netns exec`: /proc/net of this process is the test's own).
    pub fn udp_rcvbuf_errors(&self, node: Node) -> anyhow::Result<u64> {
        let mut cmd = self.command(node, "cat");
        cmd.arg("/proc/net/snmp");
        let out = self.output(cmd, Duration::from_secs(10))?;
        if !out.status.success() {
            bail!("cat /proc/net/snmp in {node}: {}", out.status);
        }
        udp_counter(&String::from_utf8_lossy(&out.stdout), "RcvbufErrors")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_udp_counter_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
            Udp: 1000 2 37 900 35 0 0 0 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
            UdpLite: 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(udp_counter(snmp, "RcvbufErrors").unwrap(), 35);
        assert_eq!(udp_counter(snmp, "InDatagrams").unwrap(), 1000);
        assert!(udp_counter(snmp, "Nope").is_err());
        assert!(udp_counter("Ip: 1\n", "RcvbufErrors").is_err());
    }
}
