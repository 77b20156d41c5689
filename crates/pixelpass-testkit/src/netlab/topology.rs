//! The lab's internet on paper: which namespaces, which links, which
//! addresses and routes, and the NAT router's nftables rules. Pure data:
//! [`plan`] lists the steps, `mod.rs` runs them.
//!
//! ```text
//!  home 192.0.2.2 ──veth── 192.0.2.1 nat 203.0.113.1 ──┐
//!                          (forward + masquerade)       │  br0 in the "wan" namespace
//!                              public 203.0.113.10 ─────┤  (a switch, no address)
//!                              viewer 203.0.113.20 ─────┘
//!
//!  thin (only lo: no wire at all until a test joins it to another node
//!        with an impaired link, e.g. 198.51.100.2 ↔ public 198.51.100.1)
//! ```
//!
//! Only documentation ranges are used (RFC 5737). Nobody has a route out of
//! the lab; only home has a default route (via nat); public and viewer have
//! no route to 192.0.2.0/24, and nat forwards from WAN to LAN only what
//! belongs to a connection home opened (like a home router).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// A machine of the lab (each one a network namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// Behind NAT: where `pixelpass host` runs.
    Home,
    /// The home router: LAN 192.0.2.1, WAN 203.0.113.1, masquerade.
    Nat,
    /// On the WAN: where the relay (`pixelpass serve`) runs.
    Public,
    /// On the WAN: a viewer somewhere on the internet.
    Viewer,
    /// A viewer with no wire of its own: its only way anywhere is an
    /// impaired link a test builds to it (`Lab::impaired_link(Node::Public,
    /// Node::Thin, …)`), so everything it receives crossed that link. (The
    /// `viewer` node reaches `public` over the clean WAN switch too, and
    /// ICE would find that way.)
    Thin,
}

impl Node {
    pub const ALL: [Node; 5] = [
        Node::Home,
        Node::Nat,
        Node::Public,
        Node::Viewer,
        Node::Thin,
    ];

    /// The short name, also the namespace name's suffix.
    pub fn name(self) -> &'static str {
        match self {
            Node::Home => "home",
            Node::Nat => "nat",
            Node::Public => "public",
            Node::Viewer => "viewer",
            Node::Thin => "thin",
        }
    }

    /// The address others on its network reach it at (nat: its WAN side,
    /// the address home's traffic leaves with; thin: its end of an impaired
    /// link built with `LinkConfig::default()`'s addresses, B side).
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Node::Home => HOME,
            Node::Nat => NAT_WAN,
            Node::Public => PUBLIC,
            Node::Viewer => VIEWER,
            Node::Thin => THIN,
        }
    }

    pub fn ip(self) -> IpAddr {
        IpAddr::V4(self.addr())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub const HOME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const NAT_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const NAT_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const VIEWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// thin's end of an impaired link with the default addresses (TEST-NET-2);
/// it has no address before such a link is built.
pub const THIN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The home LAN (TEST-NET-1).
pub const LAN: &str = "192.0.2.0/24";
/// The "internet" segment (TEST-NET-3).
pub const WAN: &str = "203.0.113.0/24";

/// The suffix of the namespace that holds the WAN switch (a bridge).
pub const SWITCH: &str = "wan";

/// One thing to do to build the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `ip -n NS ARGS…`
    Ip { ns: String, args: Vec<String> },
    /// Write `value` to `/proc/sys/KEY` from inside NS.
    Sysctl {
        ns: String,
        key: &'static str,
        value: &'static str,
    },
    /// `ip netns exec NS nft -f -` with the ruleset on stdin.
    Nft { ns: String, ruleset: String },
}

/// The namespace names of a lab whose names start with `prefix`.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn of(&self, node: Node) -> String {
        format!("{}{}", self.prefix, node.name())
    }

    pub fn switch(&self) -> String {
        format!("{}{SWITCH}", self.prefix)
    }

    /// Every namespace of the lab, the switch last.
    pub fn all(&self) -> Vec<String> {
        let mut v: Vec<String> = Node::ALL.iter().map(|&n| self.of(n)).collect();
        v.push(self.switch());
        v
    }
}

/// nat's rules: masquerade what home sends out of the WAN side; forward
/// LAN → WAN, and WAN → LAN only for connections home opened.
pub const NAT_RULESET: &str = r#"table ip pixelpass_lab {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" ip saddr 192.0.2.0/24 masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "wan0" accept
  }
}
"#;

fn ip(ns: &str, args: &[&str]) -> Step {
    Step::Ip {
        ns: ns.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// Everything after `ip netns add` of [`Names::all`], in order.
pub fn plan(names: &Names) -> Vec<Step> {
    let home = names.of(Node::Home);
    let nat = names.of(Node::Nat);
    let public = names.of(Node::Public);
    let viewer = names.of(Node::Viewer);
    let switch = names.switch();
    let mut steps = Vec::new();
    for ns in names.all() {
        steps.push(ip(&ns, &["link", "set", "lo", "up"]));
        // IPv4 only: no link-local IPv6 candidates or duplicate address detection in the way.
        for key in [
            "net/ipv6/conf/all/disable_ipv6",
            "net/ipv6/conf/default/disable_ipv6",
        ] {
            steps.push(Step::Sysctl {
                ns: ns.clone(),
                key,
                value: "1",
            });
        }
        let forward = if ns == nat { "1" } else { "0" };
        steps.push(Step::Sysctl {
            ns,
            key: "net/ipv4/ip_forward",
            value: forward,
        });
    }
    // home ↔ nat.
    steps.push(ip(
        &nat,
        &[
            "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", &home,
        ],
    ));
    // The WAN switch and one port per machine on it.
    steps.push(ip(&switch, &["link", "add", "br0", "type", "bridge"]));
    steps.push(ip(&switch, &["link", "set", "br0", "up"]));
    for (port, ns, dev) in [
        ("nat", &nat, "wan0"),
        ("public", &public, "eth0"),
        ("viewer", &viewer, "eth0"),
    ] {
        steps.push(ip(
            &switch,
            &[
                "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
            ],
        ));
        steps.push(ip(&switch, &["link", "set", port, "master", "br0", "up"]));
    }
    for (ns, dev, addr) in [
        (&home, "eth0", "192.0.2.2/24"),
        (&nat, "lan", "192.0.2.1/24"),
        (&nat, "wan0", "203.0.113.1/24"),
        (&public, "eth0", "203.0.113.10/24"),
        (&viewer, "eth0", "203.0.113.20/24"),
    ] {
        steps.push(ip(ns, &["addr", "add", addr, "dev", dev]));
        steps.push(ip(ns, &["link", "set", dev, "up"]));
    }
    steps.push(ip(&home, &["route", "add", "default", "via", "192.0.2.1"]));
    steps.push(Step::Nft {
        ns: nat,
        ruleset: NAT_RULESET.to_string(),
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            prefix: "pp1-0-".into(),
        }
    }

    #[test]
    fn every_address_is_in_a_documentation_range() {
        let doc = |a: Ipv4Addr| {
            let o = a.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        };
        for a in [HOME, NAT_LAN, NAT_WAN, PUBLIC, VIEWER, THIN] {
            assert!(doc(a), "{a}");
        }
        for step in plan(&names()) {
            if let Step::Ip { args, .. } = step {
                for a in args
                    .iter()
                    .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
                {
                    assert!(doc(a), "{a} in {args:?}");
                }
            }
        }
    }

    #[test]
    fn only_home_gets_a_route_and_only_nat_forwards() {
        let steps = plan(&names());
        let routes: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Ip { ns, args } if args[0] == "route" => Some(ns.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(routes, ["pp1-0-home"]);
        let forwarding: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Sysctl {
                    ns,
                    key,
                    value: "1",
                } if key.ends_with("ip_forward") => Some(ns.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(forwarding, ["pp1-0-nat"]);
        let lo_up = steps
            .iter()
            .filter(|s| matches!(s, Step::Ip { args, .. } if args[..3] == ["link", "set", "lo"]))
            .count();
        assert_eq!(lo_up, names().all().len());
    }
}
