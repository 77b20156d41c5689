//! File descriptors: the process's `RLIMIT_NOFILE` raised to its hard limit
//! at start (what Go's runtime does: the soft default of 1 024 is a relic of
//! `select(2)`, which pixelpass never uses), and the connection limit derived
//! from it, so HTTP connections alone can never exhaust the descriptors the
//! rest of the server needs (FFmpeg pipes, GStreamer, the UDP sockets).

/// The soft and hard `RLIMIT_NOFILE` after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before it was raised.
    pub was: u64,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit. Never fails: when the
/// limit cannot be read or raised, says so and goes on with what there is.
pub fn raise_nofile() -> FdLimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!("cannot read the open-file limit (RLIMIT_NOFILE): {e}; assuming 1024");
        return FdLimit {
            soft: 1024,
            hard: 1024,
            was: 1024,
        };
    }
    let was = lim.rlim_cur;
    let hard = lim.rlim_max;
    let mut soft = was;
    if was < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we own; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            soft = hard;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::warn!("cannot raise the open-file limit from {was} to {hard}: {e}");
        }
    }
    let limit = FdLimit {
        soft: as_count(soft),
        hard: as_count(hard),
        was: as_count(was),
    };
    if limit.soft != limit.was {
        tracing::info!(
            "open files: limit raised from {} to {} (the hard limit)",
            limit.was,
            limit.soft
        );
    } else {
        tracing::debug!("open files: limit {}", limit.soft);
    }
    limit
}

/// The current soft `RLIMIT_NOFILE` (1 024 when it cannot be read).
pub fn current_soft() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    as_count(lim.rlim_cur)
}

/// `RLIM_INFINITY` and absurd values as a count we can do arithmetic on.
fn as_count(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v
    }
}

/// Descriptors kept out of the connection limit for everything else: at
/// least 64, an eighth of the limit, at most 1 024.
pub fn reserve_for(limit: u64) -> u64 {
    (limit / 8).clamp(64, 1024)
}

/// Upper bound of the default (memory, not descriptors, is then the limit).
pub const MAX_DEFAULT_CONNECTIONS: usize = 65_536;

/// `--max-connections` when none is given: the descriptor limit less the
/// reserve, at least 16, at most [`MAX_DEFAULT_CONNECTIONS`].
pub fn default_max_connections(limit: u64) -> usize {
    let usable = limit.saturating_sub(reserve_for(limit)).max(16);
    usize::try_from(usable)
        .unwrap_or(usize::MAX)
        .min(MAX_DEFAULT_CONNECTIONS)
}

/// Open descriptors of this process (`/proc/self/fd`), when readable.
pub fn open_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_a_reserve_for_everything_else() {
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(1024), 896);
        assert_eq!(default_max_connections(20_000), 20_000 - 1024);
        assert_eq!(default_max_connections(1 << 20), MAX_DEFAULT_CONNECTIONS);
        assert_eq!(default_max_connections(u64::MAX), MAX_DEFAULT_CONNECTIONS);
        assert_eq!(default_max_connections(40), 16);
    }

    #[test]
    fn raising_ends_at_the_hard_limit() {
        let l = raise_nofile();
        assert_eq!(l.soft, l.hard, "{l:?}");
        assert!(l.soft >= l.was);
        assert_eq!(current_soft(), l.soft);
    }
}
