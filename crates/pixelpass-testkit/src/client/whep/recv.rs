//! Batched reads of the client's UDP socket (`recvmmsg`).

use std::net::SocketAddr;

/// Receive buffer asked of the kernel for each client's socket.
pub(super) const RECV_BUFFER: usize = 1 << 20;
/// Datagrams taken per `recvmmsg` call.
pub(super) const RECV_BATCH: usize = 16;
/// Largest datagram accepted (WebRTC keeps them under ~1200 bytes).
pub(super) const DATAGRAM_MAX: usize = 2048;

/// Control bytes per message: room for one `SCM_TIMESTAMPNS` (a timespec).
const CONTROL: usize = 64;

/// Ask the kernel to stamp each datagram with the time it was received
/// (`SO_TIMESTAMPNS`, CLOCK_REALTIME), read by [`recvmmsg`] into `stamps`.
pub(super) fn enable_timestamps(fd: libc::c_int) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd, and a pointer/length pair describing a live c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `recvmmsg` into `buf` (slots of [`DATAGRAM_MAX`] bytes): how many datagrams
/// came, with (length, source) in `meta`. Truncated ones are given as read.
/// With `stamps`, each datagram's kernel receive time (ns since the epoch; 0
/// if the kernel gave none, see [`enable_timestamps`]) goes there too.
pub(super) fn recvmmsg(
    fd: libc::c_int,
    buf: &mut [u8],
    meta: &mut [(usize, SocketAddr)],
    mut stamps: Option<&mut [u64]>,
) -> std::io::Result<usize> {
    let mut n = meta.len().min(buf.len() / DATAGRAM_MAX);
    if let Some(s) = &stamps {
        n = n.min(s.len());
    }
    let mut control = vec![0u8; if stamps.is_some() { n * CONTROL } else { 0 }];
    // SAFETY: sockaddr_storage and mmsghdr are plain data; all-zero is valid.
    let mut addrs: Vec<libc::sockaddr_storage> =
        (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> = buf
        .chunks_exact_mut(DATAGRAM_MAX)
        .take(n)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (i, m) in msgs.iter_mut().enumerate() {
        m.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_hdr.msg_iov = &mut iovs[i];
        m.msg_hdr.msg_iovlen = 1;
        if stamps.is_some() {
            m.msg_hdr.msg_control = control[i * CONTROL..].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CONTROL as _;
        }
    }
    // SAFETY: every msghdr points at a live address buffer and a live iovec
    // over a live slice of `buf`; all outlive the call.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        let len = (msgs[i].msg_len as usize).min(DATAGRAM_MAX);
        // SAFETY: the kernel wrote msg_namelen bytes of a sockaddr into addrs[i].
        let from =
            unsafe { socket2::SockAddr::new(addrs[i], msgs[i].msg_hdr.msg_namelen) }.as_socket();
        meta[i] = (len, from.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
        if let Some(s) = stamps.as_deref_mut() {
            s[i] = timestamp_ns(&msgs[i].msg_hdr);
        }
    }
    Ok(got)
}

/// The `SCM_TIMESTAMPNS` of a received message, in ns (0: none).
fn timestamp_ns(hdr: &libc::msghdr) -> u64 {
    // SAFETY: `hdr` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR stay within
    // msg_control/msg_controllen, and a timespec is read (unaligned) only
    // from a header of that type, whose data the kernel wrote.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    0
}
