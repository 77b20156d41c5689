//! The network lab really is the internet the NAT tests need: home is
//! unreachable from the WAN, home's traffic leaves masqueraded as nat's WAN
//! address (TCP and UDP, replies come back), the viewer reaches the relay,
//! and nothing of a lab stays after it is dropped. Needs root (CI runs as
//! root): without it `Lab::new` fails saying so.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pixelpass_testkit::netlab::{Lab, Node, HOME, NAT_WAN, PUBLIC, VIEWER};

const WAIT: Duration = Duration::from_secs(3);

fn lab() -> Lab {
    Lab::new().unwrap_or_else(|e| panic!("{e:#}"))
}

/// `ip ARGS…` in the test's own namespace; panics with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP listener on `node`'s address (a free port), made inside `node`.
fn listen(lab: &Lab, node: Node) -> TcpListener {
    let addr = SocketAddr::new(lab.addr(node), 0);
    lab.in_ns(node, || TcpListener::bind(addr))
        .unwrap()
        .unwrap()
}

/// Accept one connection within `WAIT` (polled: the wait is bounded).
fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).unwrap();
                return (s, peer);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("no connection within {WAIT:?}: {e}"),
        }
    }
}

fn assert_no_connection_came(listener: &TcpListener) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("home's listener got a connection it must not: {other:?}"),
    }
}

#[test]
fn the_viewer_cannot_reach_home_even_through_nat() {
    let lab = lab();
    let listener = listen(&lab, Node::Home);
    let target = listener.local_addr().unwrap();
    assert_eq!(target.ip(), IpAddr::V4(HOME));

    // No route: the connect fails at once.
    let err = lab
        .in_ns(Node::Viewer, || TcpStream::connect_timeout(&target, WAIT))
        .unwrap()
        .expect_err("the viewer connected to home directly");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    // The relay has no route to home either.
    let err = lab
        .in_ns(Node::Public, || TcpStream::connect_timeout(&target, WAIT))
        .unwrap()
        .expect_err("public connected to home directly");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");

    // Even a WAN that routes home's range to nat gets nothing through:
    // nat forwards WAN → LAN only for connections home opened.
    let viewer = lab.namespace(Node::Viewer);
    let via = NAT_WAN.to_string();
    ip(&["-n", &viewer, "route", "add", "192.0.2.0/24", "via", &via]);
    let t0 = Instant::now();
    let r = lab
        .in_ns(Node::Viewer, || {
            TcpStream::connect_timeout(&target, Duration::from_millis(1500))
        })
        .unwrap();
    assert!(r.is_err(), "the viewer reached home through nat: {r:?}");
    assert!(
        t0.elapsed() < WAIT,
        "connect_timeout overran: {:?}",
        t0.elapsed()
    );
    assert_no_connection_came(&listener);
    lab.close().unwrap();
}

#[test]
fn home_reaches_public_over_tcp_as_nats_wan_address() {
    let lab = lab();
    let listener = listen(&lab, Node::Public);
    let target = listener.local_addr().unwrap();
    let mut home = lab
        .in_ns(Node::Home, || TcpStream::connect_timeout(&target, WAIT))
        .unwrap()
        .expect("home cannot reach public");
    let (mut served, peer) = accept(&listener);
    assert_eq!(
        peer.ip(),
        IpAddr::V4(NAT_WAN),
        "public must see home masqueraded"
    );
    assert_eq!(home.local_addr().unwrap().ip(), IpAddr::V4(HOME));

    home.set_read_timeout(Some(WAIT)).unwrap();
    served.set_read_timeout(Some(WAIT)).unwrap();
    home.write_all(b"hello relay").unwrap();
    let mut buf = [0u8; 11];
    served.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello relay");
    served.write_all(b"hi home").unwrap();
    let mut buf = [0u8; 7];
    home.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi home");
    lab.close().unwrap();
}

#[test]
fn home_reaches_public_over_udp_as_nats_wan_address_and_the_reply_comes_back() {
    let lab = lab();
    let public = lab
        .in_ns(Node::Public, || {
            UdpSocket::bind(SocketAddr::new(IpAddr::V4(PUBLIC), 0))
        })
        .unwrap()
        .unwrap();
    let target = public.local_addr().unwrap();
    // Bound to any address, like a WebRTC client: the route picks eth0.
    let home = lab
        .in_ns(Node::Home, || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    public.set_read_timeout(Some(WAIT)).unwrap();
    home.set_read_timeout(Some(WAIT)).unwrap();

    // Datagrams can be lost before the neighbours are resolved: a few tries, each bounded.
    let mut seen = None;
    for attempt in 0..5 {
        home.send_to(format!("ping {attempt}").as_bytes(), target)
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, from)) = public.recv_from(&mut buf) {
            assert!(buf[..n].starts_with(b"ping "));
            seen = Some(from);
            break;
        }
    }
    let from = seen.expect("no datagram from home reached public in 5 tries");
    assert_eq!(
        from.ip(),
        IpAddr::V4(NAT_WAN),
        "public must see home masqueraded"
    );

    public.send_to(b"pong", from).unwrap();
    let mut buf = [0u8; 64];
    let (n, reply_from) = home
        .recv_from(&mut buf)
        .expect("public's reply did not reach home");
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(reply_from, target);

    // The viewer cannot use nat's mapping to send to home: nat's WAN
    // address accepts only replies from where home sent.
    let viewer = lab
        .in_ns(Node::Viewer, || {
            UdpSocket::bind(SocketAddr::new(IpAddr::V4(VIEWER), 0))
        })
        .unwrap()
        .unwrap();
    viewer.send_to(b"intruder", from).unwrap();
    home.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let r = home.recv_from(&mut buf);
    assert!(r.is_err(), "a datagram from the viewer reached home: {r:?}");
    lab.close().unwrap();
}

#[test]
fn the_viewer_reaches_public_and_nobody_has_a_way_out() {
    let lab = lab();
    let listener = listen(&lab, Node::Public);
    let target = listener.local_addr().unwrap();
    let _viewer = lab
        .in_ns(Node::Viewer, || TcpStream::connect_timeout(&target, WAIT))
        .unwrap()
        .expect("the viewer cannot reach public");
    let (_served, peer) = accept(&listener);
    assert_eq!(peer.ip(), IpAddr::V4(VIEWER));

    for node in Node::ALL {
        let mut cmd = lab.command(node, "ip");
        cmd.args(["-4", "route", "show", "default"]);
        let out = lab.output(cmd, WAIT).unwrap();
        assert!(
            out.status.success(),
            "{node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let routes = String::from_utf8_lossy(&out.stdout);
        match node {
            Node::Home => assert_eq!(routes.trim(), "default via 192.0.2.1 dev eth0", "{node}"),
            _ => assert_eq!(routes.trim(), "", "{node} has a default route"),
        }
        let mut cmd = lab.command(node, "ip");
        cmd.args(["-4", "-o", "addr", "show"]);
        let out = lab.output(cmd, WAIT).unwrap();
        let addrs = String::from_utf8_lossy(&out.stdout);
        assert!(
            addrs.contains(" lo "),
            "{node}: lo is not up with an address: {addrs}"
        );
        if node == Node::Thin {
            // No wire until a test builds an impaired link to it: loopback only.
            assert_eq!(addrs.lines().count(), 1, "{node}: {addrs}");
        } else {
            assert!(
                addrs.contains(&format!("inet {}/24", node.addr())),
                "{node}: {addrs}"
            );
        }
    }
    // A lab address outside of it (the host's own namespace) is unreachable from inside.
    let err = lab
        .in_ns(Node::Home, || {
            TcpStream::connect_timeout(&"198.51.100.7:80".parse().unwrap(), WAIT)
        })
        .unwrap()
        .expect_err("home reached an address beyond the lab");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
        ) || err.kind() == ErrorKind::TimedOut,
        "{err}"
    );
    lab.close().unwrap();
}

#[test]
fn drop_stops_the_children_and_leaves_no_namespace() {
    let lab = lab();
    let prefix = lab.prefix().to_string();
    let names = lab.namespaces();
    let listed = netns_list();
    for n in &names {
        assert!(listed.contains(n.as_str()), "{n} missing from: {listed}");
    }
    // One child that ends on SIGTERM, one that ignores it (SIGKILL after the grace).
    let mut polite = lab.command(Node::Public, "sleep");
    polite.arg("60").stdout(Stdio::null());
    let polite = lab.spawn(polite).unwrap().pid;
    let mut stubborn = lab.command(Node::Home, "sh");
    stubborn
        .args([
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped());
    let mut stubborn = lab.spawn(stubborn).unwrap();
    let mut ready = [0u8; 6];
    stubborn
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    // A process started in the lab but not kept by it is ended too.
    let mut loose = lab
        .command(Node::Viewer, "sleep")
        .arg("60")
        .spawn()
        .unwrap();
    assert_eq!(lab.child_pids().len(), 2);

    let t0 = Instant::now();
    drop(lab);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "teardown took {took:?}");
    for pid in [polite, stubborn.pid] {
        // SAFETY: signal 0 only checks existence; both were reaped by the lab.
        let r = unsafe { libc::kill(pid as i32, 0) };
        assert_eq!(r, -1, "PID {pid} still exists after drop");
    }
    let status = loose.wait().unwrap();
    assert!(
        !status.success(),
        "the loose child was not killed: {status}"
    );
    let listed = netns_list();
    assert!(!listed.contains(&prefix), "left behind: {listed}");
}

#[test]
fn a_panicking_test_leaves_no_namespace() {
    let mut prefix = String::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = lab();
        prefix = lab.prefix().to_string();
        let mut cmd = lab.command(Node::Nat, "sleep");
        cmd.arg("60");
        lab.spawn(cmd).unwrap();
        panic!("a failing assertion");
    }));
    assert!(r.is_err());
    assert!(!prefix.is_empty());
    let listed = netns_list();
    assert!(!listed.contains(&prefix), "left behind: {listed}");
}

#[test]
fn block_on_runs_tokio_inside_a_node() {
    let lab = lab();
    let listener = listen(&lab, Node::Public);
    let target = listener.local_addr().unwrap();
    let local = lab
        .block_on(Node::Viewer, || async move {
            let s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(target)).await??;
            s.local_addr()
        })
        .unwrap()
        .unwrap();
    assert_eq!(local.ip(), IpAddr::V4(VIEWER));
    let (_s, peer) = accept(&listener);
    assert_eq!(peer, local);
    lab.close().unwrap();
}

#[test]
fn a_lab_left_by_a_killed_test_process_is_swept() {
    // A PID that is surely gone: a child of ours, reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = format!("pp{dead}-0-home");
    ip(&["netns", "add", &stale]);
    // Not a lab name: never touched.
    let foreign = format!("pp{dead}-0-kitchen");
    ip(&["netns", "add", &foreign]);

    let lab = lab();
    let listed = netns_list();
    let _ = Command::new("ip").args(["netns", "del", &foreign]).output();
    assert!(!listed.contains(&stale), "{stale} was not swept: {listed}");
    assert!(
        listed.contains(&foreign),
        "{foreign} is not a lab name and must stay: {listed}"
    );
    lab.close().unwrap();
}
