//! The network under every peer: which addresses viewers can reach us on,
//! and [`udp`], the UDP socket WebRTC peers share (WHEP viewers, WHIP publishers).

pub(crate) mod rtc;
pub(crate) mod signal;
pub(crate) mod udp;

use std::net::{IpAddr, SocketAddr};

/// The addresses a socket bound to `bound` is reachable at: the address itself
/// when it is specific, else every up interface address of the same family
/// (loopback last, link-local IPv6 left out since it needs a scope).
pub fn reachable_addrs(bound: SocketAddr) -> Vec<IpAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound.ip()];
    }
    let want_v6 = bound.is_ipv6();
    let mut addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            // A [::] socket also takes IPv4 on Linux by default.
            IpAddr::V6(v6) => want_v6 && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    addrs.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6(), *ip));
    addrs.dedup();
    if addrs.is_empty() {
        addrs.push(if want_v6 {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        });
    }
    addrs
}

/// `http://ADDR:PORT` (or `https://` when `https`) with IPv6 in brackets.
pub fn http_base(ip: IpAddr, port: u16, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_address_is_the_only_one() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(reachable_addrs(a), vec![a.ip()]);
    }

    #[test]
    fn unspecified_lists_loopback_last() {
        let addrs = reachable_addrs("0.0.0.0:80".parse().unwrap());
        assert!(!addrs.is_empty());
        if addrs.len() > 1 {
            assert!(!addrs[0].is_loopback());
        }
        assert_eq!(
            http_base("::1".parse().unwrap(), 8, false),
            "http://[::1]:8"
        );
        assert_eq!(
            http_base("192.0.2.1".parse().unwrap(), 8, true),
            "https://192.0.2.1:8"
        );
    }
}
