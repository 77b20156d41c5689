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

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Kernel buffers asked for (the kernel caps them at net.core.*mem_max).
const SOCKET_BUFFER: usize = 4 << 20;

pub struct Udp {
    socket: UdpSocket,
    local: SocketAddr,
    /// The socket is bound to an unspecified address: read the destination per datagram.
    pktinfo: bool,
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
        Ok(Self { socket, local, pktinfo: addr.ip().is_unspecified() })
    }

    fn bind_inner(addr: SocketAddr) -> io::Result<UdpSocket> {
        let domain = if addr.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
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
            return Ok((n, Addrs { source: unmap(source), destination: self.local }));
        }
        let port = self.local.port();
        let fd = self.socket.as_raw_fd();
        let (n, source, dst) = self.socket.try_io(Interest::READABLE, || recv_pktinfo(fd, buf))?;
        // No pktinfo (should not happen once enabled): the best guess is the bound address.
        let destination = SocketAddr::new(dst.unwrap_or(self.local.ip()), port);
        Ok((n, Addrs { source: unmap(source), destination }))
    }

    /// Send without waiting; on a full kernel buffer wait until it drains.
    pub async fn send(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        let to = if self.local.is_ipv6() { map_v6(to) } else { to };
        match self.socket.try_send_to(buf, to) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.send_to(buf, to).await.map(|_| ()),
            Err(e) => Err(e),
        }
    }
}

/// The host candidate addresses for a socket bound to `local`: the bound
/// address when it is specific, else every usable interface address; then the
/// public hosts (already resolved), without duplicates.
pub fn candidate_addrs(local: SocketAddr, public: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> =
        crate::net::reachable_addrs(local).into_iter().map(|ip| SocketAddr::new(ip, local.port())).collect();
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
                Err(_) if h.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) => h.clone(),
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

/// `recvmsg` with the destination address from the pktinfo control message.
fn recv_pktinfo(fd: libc::c_int, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut src = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
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
        return Err(io::Error::new(io::ErrorKind::InvalidData, "datagram larger than the receive buffer"));
    }
    // SAFETY: the kernel wrote msg_namelen bytes of a sockaddr into src.
    let source = unsafe { socket2::SockAddr::new(src.assume_init(), msg.msg_namelen) }
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address"))?;
    let mut dst = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled (msg_controllen
    // was updated to its used length); data is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
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
        assert_eq!(addrs.destination.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn an_unspecified_bind_reads_the_destination_per_datagram() {
        // 127.0.0.2 is loopback too, and not what the socket is bound to.
        let (client, addrs) = roundtrip("0.0.0.0:0", "127.0.0.2").await;
        assert_eq!(addrs.source.port(), client.port());
        assert_eq!(addrs.destination.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn a_dual_stack_bind_unmaps_ipv4() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            return; // no IPv6 here
        }
        let (_, addrs) = roundtrip("[::]:0", "127.0.0.1").await;
        assert_eq!(addrs.destination.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(addrs.source.is_ipv4());
    }

    #[test]
    fn candidates_are_the_bound_address_plus_public_hosts() {
        let public: SocketAddr = "203.0.113.7:8861".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8861".parse().unwrap();
        assert_eq!(candidate_addrs(local, &[public, local]), vec![local, public]);
    }

    #[tokio::test]
    async fn public_hosts_resolve_with_the_default_port() {
        let got = resolve_public_hosts(&["203.0.113.7".into(), "198.51.100.1:4000".into(), "localhost".into()], 8861)
            .await
            .unwrap();
        assert_eq!(got[0], "203.0.113.7:8861".parse().unwrap());
        assert_eq!(got[1], "198.51.100.1:4000".parse().unwrap());
        assert!(got[2..].iter().all(|a| a.ip().is_loopback() && a.port() == 8861));
    }
}
