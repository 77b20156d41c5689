use super::sys::segment_runs;
use super::*;

async fn roundtrip(bind: &str, to_ip: &str) -> (SocketAddr, Addrs) {
    let udp = Udp::bind(bind.parse().unwrap()).unwrap();
    let port = udp.local_addr().port();
    let to_ip: IpAddr = to_ip.parse().unwrap();
    let client = std::net::UdpSocket::bind(SocketAddr::new(to_ip, 0)).unwrap();
    let target = SocketAddr::new(to_ip, port);
    client.send_to(b"hello", target).unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            udp.readable().await.unwrap();
            match udp.try_recv(&mut buf) {
                Ok(x) => return x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the datagram arrives");
    assert_eq!(&buf[..got.0], b"hello");
    (client.local_addr().unwrap(), got.1)
}

#[tokio::test]
async fn a_specific_bind_reports_its_own_address() {
    let (client, addrs) = roundtrip("127.0.0.1:0", "127.0.0.1").await;
    assert_eq!(addrs.source, client);
    assert_eq!(
        addrs.destination.ip(),
        "127.0.0.1".parse::<IpAddr>().unwrap()
    );
}

#[tokio::test]
async fn an_unspecified_bind_reads_the_destination_per_datagram() {
    // 127.0.0.2 is loopback too, and not what the socket is bound to.
    let (client, addrs) = roundtrip("0.0.0.0:0", "127.0.0.2").await;
    assert_eq!(addrs.source.port(), client.port());
    assert_eq!(
        addrs.destination.ip(),
        "127.0.0.2".parse::<IpAddr>().unwrap()
    );
}

#[tokio::test]
async fn a_dual_stack_bind_unmaps_ipv4() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        return; // no IPv6 here
    }
    let (_, addrs) = roundtrip("[::]:0", "127.0.0.1").await;
    assert_eq!(
        addrs.destination.ip(),
        "127.0.0.1".parse::<IpAddr>().unwrap()
    );
    assert!(addrs.source.is_ipv4());
}

#[tokio::test]
async fn a_batch_goes_out_in_order_in_few_calls() {
    let udp = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = SendBatch::default();
    for i in 0..150u32 {
        let to = if i % 3 == 0 {
            b.local_addr().unwrap()
        } else {
            a.local_addr().unwrap()
        };
        batch.push(i.to_be_bytes().to_vec(), to);
    }
    assert_eq!(batch.len(), 150);
    udp.send_batch(&mut batch).await;
    assert!(batch.is_empty());
    let read = |s: &std::net::UdpSocket, n: usize| -> Vec<u32> {
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        (0..n)
            .map(|_| {
                let (len, from) = s.recv_from(&mut buf).unwrap();
                assert_eq!((len, from), (4, udp.local_addr()));
                u32::from_be_bytes(buf[..4].try_into().unwrap())
            })
            .collect()
    };
    assert_eq!(
        read(&b, 50),
        (0..150).filter(|i| i % 3 == 0).collect::<Vec<_>>()
    );
    assert_eq!(
        read(&a, 100),
        (0..150).filter(|i| i % 3 != 0).collect::<Vec<_>>()
    );
}

#[test]
fn runs_are_one_size_to_one_peer_with_a_shorter_last() {
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let items = |spec: &[(usize, SocketAddr)]| -> Vec<(Vec<u8>, SocketAddr)> {
        spec.iter().map(|(n, to)| (vec![0u8; *n], *to)).collect()
    };
    let runs = |spec: &[(usize, SocketAddr)], gso: bool| -> Vec<(usize, usize, usize)> {
        segment_runs(&items(spec), gso)
            .iter()
            .map(|r| (r.start, r.count, r.seg))
            .collect()
    };
    // A frame to a (3 full + a short last), another frame's start, audio to b.
    let spec = [
        (1200, a),
        (1200, a),
        (1200, a),
        (800, a),
        (1200, a),
        (1200, a),
        (300, b),
        (300, b),
        (1200, a),
    ];
    assert_eq!(
        runs(&spec, true),
        vec![(0, 4, 1200), (4, 2, 1200), (6, 2, 300), (8, 1, 1200)]
    );
    assert_eq!(
        runs(&spec, false).len(),
        spec.len(),
        "one message per datagram without GSO"
    );
    // A longer datagram after a shorter one starts a new run.
    assert_eq!(
        runs(&[(500, a), (1200, a)], true),
        vec![(0, 1, 500), (1, 1, 1200)]
    );
    // Bounded in segments and bytes.
    let many: Vec<(usize, SocketAddr)> = (0..100).map(|_| (100, a)).collect();
    assert_eq!(runs(&many, true), vec![(0, 64, 100), (64, 36, 100)]);
    let big: Vec<(usize, SocketAddr)> = (0..60).map(|_| (1200, a)).collect();
    assert_eq!(runs(&big, true), vec![(0, 50, 1200), (50, 10, 1200)]);
    assert!(runs(&[], true).is_empty());
}

#[tokio::test]
async fn runs_arrive_as_separate_datagrams() {
    let udp = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let r = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = r.local_addr().unwrap();
    let mut batch = SendBatch::default();
    let sizes = [1200usize, 1200, 1200, 700, 1200, 90];
    for (i, n) in sizes.iter().enumerate() {
        batch.push(vec![i as u8; *n], to);
    }
    udp.send_batch(&mut batch).await;
    // Loopback takes GSO on any kernel since 4.18; elsewhere the fallback sent them.
    eprintln!("GSO in use: {}", udp.gso.load(Ordering::Relaxed));
    r.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for (i, n) in sizes.iter().enumerate() {
        let len = r.recv(&mut buf).unwrap();
        assert_eq!((len, buf[0], buf[len - 1]), (*n, i as u8, i as u8));
    }
}

#[test]
fn candidates_are_the_bound_address_plus_public_hosts() {
    let public: SocketAddr = "203.0.113.7:8861".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:8861".parse().unwrap();
    assert_eq!(
        candidate_addrs(local, &[public, local]),
        vec![local, public]
    );
}

#[tokio::test]
async fn public_hosts_resolve_with_the_default_port() {
    let got = resolve_public_hosts(
        &[
            "203.0.113.7".into(),
            "198.51.100.1:4000".into(),
            "localhost".into(),
        ],
        8861,
    )
    .await
    .unwrap();
    assert_eq!(got[0], "203.0.113.7:8861".parse().unwrap());
    assert_eq!(got[1], "198.51.100.1:4000".parse().unwrap());
    assert!(got[2..]
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 8861));
}
