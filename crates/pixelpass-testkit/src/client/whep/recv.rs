//! Batched reads of the client's UDP socket (`recvmmsg`).

use std::net::SocketAddr;

/// Receive buffer asked of the kernel for each client's socket.
pub(super) const RECV_BUFFER: usize = 1 << 20;
/// Datagrams taken per `recvmmsg` call.
pub(super) const RECV_BATCH: usize = 16;
/// Largest datagram accepted (WebRTC keeps them under ~1200 bytes).
pub(super) const DATAGRAM_MAX: usize = 2048;

/// `recvmmsg` into `buf` (slots of [`DATAGRAM_MAX`] bytes): how many datagrams
/// came, with (length, source) in `meta`. Truncated ones are given as read.
pub(super) fn recvmmsg(
    fd: libc::c_int,
    buf: &mut [u8],
    meta: &mut [(usize, SocketAddr)],
) -> std::io::Result<usize> {
    let n = meta.len().min(buf.len() / DATAGRAM_MAX);
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
    }
    Ok(got)
}
