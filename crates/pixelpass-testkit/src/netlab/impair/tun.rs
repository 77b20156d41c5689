//! A TUN device (layer 3, no packet-info header) by `ioctl(TUNSETIFF)` on
//! /dev/net/tun. The device is made in the network namespace of the calling
//! thread and lives as long as the file descriptor: closing it (drop)
//! deletes the device, so nothing is left behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{bail, Context};

pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Create TUN device `name` (at most 15 bytes) in this thread's
    /// namespace, non-blocking.
    pub fn create(name: &str) -> anyhow::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            bail!("{name:?} is not a usable interface name (1 to 15 bytes, no '/' or space)");
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .context(
                "cannot open /dev/net/tun (no TUN driver, or no CAP_NET_ADMIN): \
                 the impaired link needs it",
            )?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("TUNSETIFF {name} failed"));
        }
        Ok(Tun {
            file,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One packet into `buf`; `WouldBlock` when none waits.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Hand one packet to the kernel, as if it came in on this device.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
