//! The system calls under [`super::Udp`]: socket options, `recvmsg` with
//! pktinfo, and `sendmmsg` of UDP GSO runs.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{map_v6, SEND_BATCH};

pub(super) fn setsockopt_on(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<()> {
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
pub(super) fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

/// A run of datagrams sent as one message: `count` items from `start`,
/// all `seg` bytes long but the last (which may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub start: usize,
    pub count: usize,
    pub seg: usize,
}

/// Segments per GSO message (the kernel's UDP_MAX_SEGMENTS is at least 64).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes per GSO message (one IP datagram carries it through the stack).
const GSO_MAX_BYTES: usize = 60_000;

/// Split `items` into runs: consecutive datagrams to one destination, of one
/// size except a shorter last one (what UDP GSO can carry); single datagrams
/// without `gso`.
pub(super) fn segment_runs(items: &[(Vec<u8>, SocketAddr)], gso: bool) -> Vec<Run> {
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
pub(super) fn sendmmsg(
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
pub(super) fn recv_pktinfo(
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
