//! The ONE UDP socket every WebRTC peer shares, and the host candidates it is
//! advertised under.
//!
//! ICE only accepts a datagram whose destination equals one of our candidate
//! addresses. Bound to one address, that is the socket's own address. Bound
//! to 0.0.0.0 / [::], the kernel tells us per datagram which local address it
//! was sent to (`IP_PKTINFO` / `IPV6_PKTINFO`).

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Kernel buffers asked for (the kernel caps them at net.core.*mem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams handed to the kernel per `sendmmsg` call.
pub const SEND_BATCH: usize = 64;

/// Datagrams waiting to go out, sent together ([`Udp::send_batch`]): one
/// system call per up to [`SEND_BATCH`] datagrams instead of one each.
#[derive(Default)]
pub struct SendBatch {
    items: Vec<(Vec<u8>, SocketAddr)>,
}

impl SendBatch {
    pub fn push(&mut self, datagram: Vec<u8>, to: SocketAddr) {
        self.items.push((datagram, to));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

pub struct Udp {
    socket: UdpSocket,
    local: SocketAddr,
    /// The socket is bound to an unspecified address: read the destination per datagram.
    pktinfo: bool,
    /// Send runs of datagrams with UDP GSO (until the kernel refuses it once).
    gso: AtomicBool,
}

/// One received datagram's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

impl Udp {
    /// Bind `addr` (with a message that says what to do when the port is taken).
    pub fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let socket = Self::bind_inner(addr).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "cannot bind the WebRTC UDP port {addr}: it is taken (another pixelpass?); choose another with --webrtc-udp {}:PORT",
                    addr.ip()
                )
            } else {
                anyhow::anyhow!("cannot bind the WebRTC UDP port {addr}: {e}")
            }
        })?;
        let local = socket.local_addr()?;
        Ok(Self {
            socket,
            local,
            pktinfo: addr.ip().is_unspecified(),
            gso: AtomicBool::new(true),
        })
    }

    fn bind_inner(addr: SocketAddr) -> io::Result<UdpSocket> {
        let domain = if addr.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        if addr.ip().is_unspecified() {
            let fd = s.as_raw_fd();
            if addr.is_ipv6() {
                // A [::] socket takes IPv4 too: ask for both kinds of pktinfo.
                setsockopt_on(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
                let _ = setsockopt_on(fd, libc::IPPROTO_IP, libc::IP_PKTINFO);
            } else {
                setsockopt_on(fd, libc::IPPROTO_IP, libc::IP_PKTINFO)?;
            }
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        UdpSocket::from_std(s.into())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Receive one datagram without waiting (`WouldBlock` when there is none).
    /// Truncated datagrams (larger than `buf`) are reported as `InvalidData`.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, Addrs)> {
        if !self.pktinfo {
            let (n, source) = self.socket.try_recv_from(buf)?;
            return Ok((
                n,
                Addrs {
                    source: unmap(source),
                    destination: self.local,
                },
            ));
        }
        let port = self.local.port();
        let fd = self.socket.as_raw_fd();
        let (n, source, dst) = self
            .socket
            .try_io(Interest::READABLE, || recv_pktinfo(fd, buf))?;
        // No pktinfo (should not happen once enabled): the best guess is the bound address.
        let destination = SocketAddr::new(dst.unwrap_or(self.local.ip()), port);
        Ok((
            n,
            Addrs {
                source: unmap(source),
                destination,
            },
        ))
    }

    /// Send every datagram of `batch` (in order) and empty it: up to
    /// [`SEND_BATCH`] messages per `sendmmsg`, and with UDP GSO a run of
    /// datagrams to one peer (the packets of a video frame: all one size but
    /// the last) is one message the kernel cuts up, so the stack is walked
    /// once per run instead of once per datagram. On a full kernel buffer it
    /// waits until it drains; a datagram the kernel refuses (e.g. no route)
    /// is dropped, as a network would, and the rest go on.
    pub async fn send_batch(&self, batch: &mut SendBatch) {
        let mut groups = segment_runs(&batch.items, self.gso.load(Ordering::Relaxed));
        let mut at = 0;
        while at < groups.len() {
            let end = (at + SEND_BATCH).min(groups.len());
            let fd = self.socket.as_raw_fd();
            let v6 = self.local.is_ipv6();
            let chunk = &groups[at..end];
            match self
                .socket
                .try_io(Interest::WRITABLE, || sendmmsg(fd, &batch.items, chunk, v6))
            {
                Ok(n) => at += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.socket.writable().await {
                        tracing::debug!("WebRTC UDP socket not writable: {e}");
                        break;
                    }
                }
                Err(e)
                    if groups[at].count > 1
                        && gso_refused(&e)
                        && self.gso.swap(false, Ordering::Relaxed) =>
                {
                    // This path (device, kernel) does not take UDP GSO: send datagrams one by one from now on.
                    tracing::info!("WebRTC UDP: no segmentation offload here ({e}); sending datagrams one by one");
                    let first = groups[at].start;
                    let rest = segment_runs(&batch.items[first..], false);
                    groups.truncate(at);
                    groups.extend(rest.into_iter().map(|g| Run {
                        start: g.start + first,
                        ..g
                    }));
                }
                Err(e) => {
                    // The first message of the chunk failed on its own: skip it.
                    tracing::debug!(to = %batch.items[groups[at].start].1, "WebRTC UDP send: {e}");
                    at += 1;
                }
            }
        }
        batch.items.clear();
    }
}

/// The host candidate addresses for a socket bound to `local`: the bound
/// address when it is specific, else every usable interface address; then the
/// public hosts (already resolved), without duplicates.
pub fn candidate_addrs(local: SocketAddr, public: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = crate::net::reachable_addrs(local)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, local.port()))
        .collect();
    for p in public {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}

/// Resolve `--public-host HOST[:PORT]` values (the port defaults to `port`).
pub async fn resolve_public_hosts(hosts: &[String], port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for h in hosts {
        let with_port = match h.parse::<SocketAddr>() {
            Ok(a) => a.to_string(),
            Err(_) => match h.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port).to_string(),
                // A name, a name:port, or [v6]:port.
                Err(_)
                    if h.rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
                {
                    h.clone()
                }
                Err(_) => format!("{h}:{port}"),
            },
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| anyhow::anyhow!("--public-host {h}: cannot resolve: {e}"))?
            .collect();
        if addrs.is_empty() {
            anyhow::bail!("--public-host {h}: the name has no address");
        }
        out.extend(addrs.into_iter().map(unmap));
    }
    Ok(out)
}

fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

fn map_v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        SocketAddr::V6(_) => a,
    }
}

fn setsockopt_on(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd, and a pointer/length pair describing a live c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The errors a kernel or device without UDP GSO answers a segmented send with.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

/// A run of datagrams sent as one message: `count` items from `start`,
/// all `seg` bytes long but the last (which may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    start: usize,
    count: usize,
    seg: usize,
}

/// Segments per GSO message (the kernel's UDP_MAX_SEGMENTS is at least 64).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes per GSO message (one IP datagram carries it through the stack).
const GSO_MAX_BYTES: usize = 60_000;

/// Split `items` into runs: consecutive datagrams to one destination, of one
/// size except a shorter last one (what UDP GSO can carry); single datagrams
/// without `gso`.
fn segment_runs(items: &[(Vec<u8>, SocketAddr)], gso: bool) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let (to, seg) = (items[i].1, items[i].0.len());
        let (mut j, mut bytes) = (i + 1, seg);
        while gso && seg > 0 && j < items.len() && j - i < GSO_MAX_SEGMENTS {
            let (next, dest) = (items[j].0.len(), items[j].1);
            if dest != to || next > seg || next == 0 || bytes + next > GSO_MAX_BYTES {
                break;
            }
            bytes += next;
            j += 1;
            if next < seg {
                break; // a shorter datagram can only end a run
            }
        }
        runs.push(Run {
            start: i,
            count: j - i,
            seg,
        });
        i = j;
    }
    runs
}

/// One `sendmmsg` of `runs` (at most [`SEND_BATCH`]) of `items`; how many
/// runs went out. A run of more than one datagram carries `UDP_SEGMENT`.
fn sendmmsg(
    fd: libc::c_int,
    items: &[(Vec<u8>, SocketAddr)],
    runs: &[Run],
    v6: bool,
) -> io::Result<usize> {
    let runs = &runs[..runs.len().min(SEND_BATCH)];
    let addrs: Vec<socket2::SockAddr> = runs
        .iter()
        .map(|r| {
            let to = items[r.start].1;
            socket2::SockAddr::from(if v6 { map_v6(to) } else { to })
        })
        .collect();
    let mut iovs: Vec<libc::iovec> = runs
        .iter()
        .flat_map(|r| &items[r.start..r.start + r.count])
        .map(|(b, _)| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // One cmsg (u16 segment size) per message; u64 elements: cmsghdr alignment.
    let mut controls: Vec<[u64; 4]> = vec![[0u64; 4]; runs.len()];
    // SAFETY: mmsghdr is plain data; all-zero is a valid "empty" value.
    let mut msgs: Vec<libc::mmsghdr> = (0..runs.len()).map(|_| unsafe { mem::zeroed() }).collect();
    let mut iov_at = 0;
    for (i, (m, r)) in msgs.iter_mut().zip(runs).enumerate() {
        m.msg_hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
        m.msg_hdr.msg_namelen = addrs[i].len();
        m.msg_hdr.msg_iov = iovs[iov_at..].as_mut_ptr();
        m.msg_hdr.msg_iovlen = r.count as _;
        iov_at += r.count;
        if r.count > 1 {
            let control = &mut controls[i];
            m.msg_hdr.msg_control = control.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is a pure size computation.
            m.msg_hdr.msg_controllen =
                unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as _;
            // SAFETY: msg_control points at a zeroed, aligned buffer of at
            // least CMSG_SPACE(2) bytes (32 bytes), so the first header and
            // its 2 data bytes lie within it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), r.seg as u16);
            }
        }
    }
    // SAFETY: every msghdr points at a live address, live iovecs (each at a
    // live buffer of the stated length) and, for runs, a live control buffer;
    // all outlive the call.
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `recvmsg` with the destination address from the pktinfo control message.
fn recv_pktinfo(
    fd: libc::c_int,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut src = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 elements: cmsghdr alignment.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; all-zero is a valid "empty" value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = src.as_mut_ptr().cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every pointer in msg points at a live buffer of the stated length.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram larger than the receive buffer",
        ));
    }
    // SAFETY: the kernel wrote msg_namelen bytes of a sockaddr into src.
    let source = unsafe { socket2::SockAddr::new(src.assume_init(), msg.msg_namelen) }
        .as_socket()
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
        })?;
    let mut dst = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled (msg_controllen
    // was updated to its used length); data is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                dst = Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, source, dst))
}

#[cfg(test)]
mod tests {
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
}
