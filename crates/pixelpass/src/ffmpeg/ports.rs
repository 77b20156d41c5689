//! The two adjacent loopback UDP ports a stream's FFmpeg sends RTP to.
//!
//! FFmpeg gets video on port V and audio on V+1. Adjacent ports keep the command line and
//! the logs easy to read; pixelpass binds both *before* starting FFmpeg and keeps draining
//! them, so FFmpeg never sends into a closed port (ICMP errors) and no other process can
//! grab them between our check and FFmpeg's start.

use std::io;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// How many kernel-picked ports are tried before giving up on finding a free neighbour.
pub const PAIR_TRIES: usize = 10;

/// Receive buffer asked for on each socket: a keyframe burst at high bitrate must not be
/// dropped while the drain task is briefly busy.
const RCVBUF_BYTES: libc::c_int = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("cannot bind a UDP socket on {ip}: {source} (is {ip} an address of this machine?)")]
    Bind { ip: IpAddr, source: io::Error },
    #[error("could not find two adjacent free UDP ports on {ip} after {tries} tries (is the ephemeral port range nearly exhausted?)")]
    NoAdjacent { ip: IpAddr, tries: usize },
    #[error("cannot configure UDP socket {port} on {ip}: {source}")]
    Configure {
        ip: IpAddr,
        port: u16,
        source: io::Error,
    },
}

/// Binds (V, V+1) on `ip` with kernel-picked V; both sockets are nonblocking.
pub fn bind_pair(ip: IpAddr) -> Result<(UdpSocket, UdpSocket), PairError> {
    let (video, audio, _) = bind_pair_with(ip, PAIR_TRIES, || UdpSocket::bind((ip, 0)))?;
    Ok((video, audio))
}

/// One more video port for a layer (see `super::layers`): kernel-picked on
/// `ip`, nonblocking, buffered like the pair's.
pub fn bind_one(ip: IpAddr) -> Result<UdpSocket, PairError> {
    let socket = UdpSocket::bind((ip, 0)).map_err(|source| PairError::Bind { ip, source })?;
    let port = socket
        .local_addr()
        .map_err(|source| PairError::Bind { ip, source })?
        .port();
    configure(ip, port, &socket)?;
    Ok(socket)
}

/// [`bind_pair`] with the first socket supplied by `first` (tests inject collisions) and
/// the number of attempts reported. A failed attempt drops its socket before the next.
pub fn bind_pair_with(
    ip: IpAddr,
    tries: usize,
    mut first: impl FnMut() -> io::Result<UdpSocket>,
) -> Result<(UdpSocket, UdpSocket, usize), PairError> {
    let bind_err = |source| PairError::Bind { ip, source };
    for attempt in 1..=tries {
        let video = first().map_err(bind_err)?;
        let port = video.local_addr().map_err(bind_err)?.port();
        if port == 0 || port == u16::MAX {
            continue; // no V+1 exists above 65535
        }
        let audio = match UdpSocket::bind((ip, port + 1)) {
            Ok(audio) => audio,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_err(e)),
        };
        configure(ip, port, &video)?;
        configure(ip, port + 1, &audio)?;
        return Ok((video, audio, attempt));
    }
    Err(PairError::NoAdjacent { ip, tries })
}

fn configure(ip: IpAddr, port: u16, socket: &UdpSocket) -> Result<(), PairError> {
    socket
        .set_nonblocking(true)
        .map_err(|source| PairError::Configure { ip, port, source })?;
    // A hint: the kernel caps it at net.core.rmem_max, and a smaller buffer still works,
    // so a failure here is not worth refusing to start the stream.
    // SAFETY: valid fd owned by `socket`; the option value is a c_int of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&RCVBUF_BYTES as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn port(s: &UdpSocket) -> u16 {
        s.local_addr().unwrap().port()
    }

    /// A socket on some port P whose neighbour P+1 is held (in `held`) by the test.
    fn colliding(held: &mut Vec<UdpSocket>) -> io::Result<UdpSocket> {
        for _ in 0..1000 {
            let upper = UdpSocket::bind((LO, 0))?;
            let p = port(&upper);
            if p < 2 {
                continue;
            }
            if let Ok(lower) = UdpSocket::bind((LO, p - 1)) {
                held.push(upper);
                return Ok(lower);
            }
        }
        Err(io::Error::other(
            "no free port below a kernel-picked one in 1000 tries",
        ))
    }

    fn rcvbuf(s: &UdpSocket) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    #[test]
    fn pair_is_adjacent_nonblocking_and_buffered() {
        let (v, a) = bind_pair(LO).unwrap();
        assert_eq!(port(&a), port(&v) + 1);
        let mut buf = [0u8; 16];
        assert_eq!(
            v.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(
            a.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let max: libc::c_int = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Linux reports twice the requested value (bookkeeping overhead), capped by rmem_max.
        assert!(
            rcvbuf(&v) >= RCVBUF_BYTES.min(max),
            "SO_RCVBUF {} (rmem_max {max})",
            rcvbuf(&v)
        );
        assert!(rcvbuf(&a) >= RCVBUF_BYTES.min(max));
    }

    #[test]
    fn taken_neighbour_is_retried_with_a_new_port() {
        let mut held = Vec::new();
        let mut calls = 0;
        let mut collided_port = 0;
        let (v, a, attempts) = bind_pair_with(LO, PAIR_TRIES, || {
            calls += 1;
            if calls == 1 {
                let s = colliding(&mut held)?;
                collided_port = port(&s);
                Ok(s)
            } else {
                UdpSocket::bind((LO, 0))
            }
        })
        .unwrap();
        assert_eq!(attempts, 2);
        assert_eq!(port(&a), port(&v) + 1);
        assert_ne!(port(&v), collided_port);
        // The colliding socket was dropped: its port can be bound again.
        drop(UdpSocket::bind((LO, collided_port)).unwrap());
    }

    #[test]
    fn gives_up_after_exactly_the_given_tries() {
        let mut held = Vec::new();
        let mut calls = 0;
        let err = bind_pair_with(LO, 4, || {
            calls += 1;
            colliding(&mut held)
        })
        .unwrap_err();
        assert_eq!(calls, 4);
        assert!(matches!(err, PairError::NoAdjacent { tries: 4, .. }));
        assert_eq!(
            err.to_string().split(" (").next().unwrap(),
            "could not find two adjacent free UDP ports on 127.0.0.1 after 4 tries"
        );
    }

    #[test]
    fn port_65535_is_skipped() {
        let Ok(top) = UdpSocket::bind((LO, u16::MAX)) else {
            eprintln!("note: 127.0.0.1:65535 is in use here; skipping the 65535 test");
            return;
        };
        let mut top = Some(top);
        let (v, _, attempts) = bind_pair_with(LO, 3, || {
            top.take().map_or_else(|| UdpSocket::bind((LO, 0)), Ok)
        })
        .unwrap();
        assert_eq!(attempts, 2);
        assert_ne!(port(&v), u16::MAX);
    }

    #[test]
    fn bind_failure_is_reported_at_once() {
        let mut calls = 0;
        let err = bind_pair_with(LO, 5, || {
            calls += 1;
            Err(io::Error::from(io::ErrorKind::AddrNotAvailable))
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(
            err.to_string()
                .starts_with("cannot bind a UDP socket on 127.0.0.1"),
            "{err}"
        );
        let foreign: IpAddr = "192.0.2.1".parse().unwrap(); // TEST-NET-1, never local
        assert!(matches!(bind_pair(foreign), Err(PairError::Bind { .. })));
    }
}
