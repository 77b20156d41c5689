//! The ONE UDP socket every WebRTC peer shares, and the host candidates it is
//! advertised under.
//!
//! ICE only accepts a datagram whose destination equals one of our candidate
//! addresses. Bound to one address, that is the socket's own address. Bound
//! to 0.0.0.0 / [::], the kernel tells us per datagram which local address it
//! was sent to (`IP_PKTINFO` / `IPV6_PKTINFO`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use sys::{gso_refused, recv_pktinfo, segment_runs, sendmmsg, setsockopt_on, Run};

mod sys;

/// Kernel buffers asked for (the kernel caps them at net.core.*mem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams handed to the kernel per `sendmmsg` call.
pub const SEND_BATCH: usize = 64;

/// Stop the task that drives a socket (the WHEP or the WHIP engine): give it
/// up to 1 s to answer the shutdown order it was sent (`answered`: `None`
/// when the order could not be sent, the task being gone), then abort it and
/// wait until it has ended, so the socket is closed on return.
pub(crate) async fn stop_driver(
    answered: Option<tokio::sync::oneshot::Receiver<()>>,
    driver: &std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
) {
    if let Some(rx) = answered {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), rx).await;
    }
    let task = driver.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(task) = task {
        task.abort();
        let _ = task.await;
    }
}

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

    /// Add `datagram` to `batch`, and send the batch once a whole
    /// [`SEND_BATCH`] of datagrams waits (the rest goes at the caller's flush).
    pub async fn queue(&self, batch: &mut SendBatch, datagram: Vec<u8>, to: SocketAddr) {
        batch.push(datagram, to);
        if batch.len() >= SEND_BATCH {
            self.send_batch(batch).await;
        }
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
        // Sent (or dropped): str0m seals later packets into these buffers
        // (`str0m::recycle_datagram`) instead of a malloc and free each.
        for (buf, _) in batch.items.drain(..) {
            str0m::recycle_datagram(buf);
        }
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

#[cfg(test)]
mod tests;
