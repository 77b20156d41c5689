//! What the benchmark reads about its own process and the machine: CPU time
//! (getrusage, plus per-thread from /proc/self/task/*/stat), resident memory
//! (VmRSS), per-CPU counters (/proc/stat), and pinning a process to one CPU.
//!
//! The parsers are pure functions over the text of one /proc file.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

/// CPU time the whole process (all threads) has used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTimes {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// `self - earlier`, never negative.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// This process's CPU time from getrusage(RUSAGE_SELF): microsecond
/// resolution (/proc/self/stat counts 10 ms ticks, too coarse for one viewer).
pub fn process_cpu() -> io::Result<CpuTimes> {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(CpuTimes {
        user: tv(ru.ru_utime),
        system: tv(ru.ru_stime),
    })
}

/// One line of /proc/PID/stat (or /proc/self/task/TID/stat): the command
/// name and utime/stime in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLine {
    pub comm: String,
    pub utime_ticks: u64,
    pub stime_ticks: u64,
}

/// Parse a /proc stat line. The command name sits in parentheses and may hold
/// spaces and ')' itself, so fields are counted from the LAST ')'.
pub fn parse_stat(line: &str) -> Option<StatLine> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_owned();
    // After ')': field 3 (state) is index 0, so utime (field 14) is index 11.
    let mut rest = line.get(close + 1..)?.split_ascii_whitespace();
    let utime_ticks = rest.nth(11)?.parse().ok()?;
    let stime_ticks = rest.next()?.parse().ok()?;
    Some(StatLine {
        comm,
        utime_ticks,
        stime_ticks,
    })
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU ticks (user + system) per thread name, summed over threads of the same
/// name ("tokio-runtime-w" × workers, the replay thread, …).
pub fn thread_ticks() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(s) = parse_stat(&text) {
            *out.entry(s.comm).or_insert(0) += s.utime_ticks + s.stime_ticks;
        }
    }
    out
}

/// VmRSS from the text of /proc/PID/status, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_bytes(status, "VmRSS")
}

/// A size field (`VmRSS`, `RssAnon`, …) of /proc/PID/status, in bytes.
pub fn parse_status_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let mut it = line[field.len() + 1..].split_ascii_whitespace();
    let value: u64 = it.next()?.parse().ok()?;
    let unit = it.next().unwrap_or("kB");
    let mult = match unit {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    Some(value * mult)
}

/// This process's resident set size in bytes.
pub fn rss_bytes() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    parse_vm_rss(&text).ok_or_else(|| io::Error::other("no VmRSS line in /proc/self/status"))
}

/// One `cpuN` line of /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuLine {
    pub busy: u64,
    pub idle: u64,
    pub softirq: u64,
}

impl CpuLine {
    pub fn since(&self, earlier: &CpuLine) -> CpuLine {
        CpuLine {
            busy: self.busy.saturating_sub(earlier.busy),
            idle: self.idle.saturating_sub(earlier.idle),
            softirq: self.softirq.saturating_sub(earlier.softirq),
        }
    }
}

/// The line for CPU `cpu` in the text of /proc/stat.
pub fn parse_proc_stat_cpu(text: &str, cpu: usize) -> Option<CpuLine> {
    let name = format!("cpu{cpu}");
    let line = text
        .lines()
        .find(|l| l.split_ascii_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    if v.len() < 7 {
        return None;
    }
    let idle = v[3] + v[4];
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v.get(7).copied().unwrap_or(0);
    Some(CpuLine {
        busy,
        idle,
        softirq: v[6],
    })
}

pub fn cpu_line(cpu: usize) -> Option<CpuLine> {
    parse_proc_stat_cpu(&std::fs::read_to_string("/proc/stat").ok()?, cpu)
}

/// CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pin the calling thread (and every thread it starts afterwards) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::other(format!("no CPU {cpu}")));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raise the soft open-file limit to the hard one (1000 viewers = 1000
/// sockets): the server's own [`pixelpass::http::fds::raise_nofile`].
pub fn raise_nofile_limit() -> io::Result<u64> {
    let l = pixelpass::http::fds::raise_nofile();
    if l.soft < l.hard {
        return Err(io::Error::other(format!(
            "the open-file limit stays at {} (hard limit {})",
            l.soft, l.hard
        )));
    }
    Ok(l.soft)
}

/// RSS as a step's baseline: after the previous step's clients had 300 ms
/// to go and the freed heap went back to the OS (glibc keeps freed arenas
/// resident: a baseline would hide memory the next step reuses).
pub fn settled_rss() -> io::Result<u64> {
    std::thread::sleep(std::time::Duration::from_millis(300));
    pixelpass::heap::release_free();
    rss_bytes()
}

/// How often [`MemPeak`] reads /proc/self/status.
const PEAK_EVERY: Duration = Duration::from_millis(100);

/// The highest VmRSS and `RssAnon` of this process, read on a thread every
/// [`PEAK_EVERY`] until [`stop`](Self::stop). Two samples, one at each end
/// of a window, mostly miss the peaks: a keyframe goes to every peer at
/// once and sits in their pacing queues as sealed datagrams for a moment.
pub struct MemPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<io::Result<(u64, u64)>>,
}

impl MemPeak {
    pub fn start() -> io::Result<Self> {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-mem-peak".into())
            .spawn(move || {
                let mut peak = (0, 0);
                while !flag.load(Ordering::Relaxed) {
                    let (rss, anon) = mem_bytes()?;
                    peak = (peak.0.max(rss), peak.1.max(anon));
                    std::thread::sleep(PEAK_EVERY);
                }
                Ok(peak)
            })?;
        Ok(Self { stop, thread })
    }

    /// (VmRSS, RssAnon), the highest of each, in bytes.
    pub fn stop(self) -> io::Result<(u64, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the memory sampler thread panicked"))?
    }
}

/// This process's VmRSS and anonymous resident memory (`RssAnon`: heap,
/// stacks, anonymous maps: VmRSS without the file-backed pages, i.e.
/// without the binary's code the first peers page in, once), in bytes, from
/// one read of /proc/self/status.
pub fn mem_bytes() -> io::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| {
        parse_status_bytes(&text, name)
            .ok_or_else(|| io::Error::other(format!("no {name} line in /proc/self/status")))
    };
    Ok((field("VmRSS")?, field("RssAnon")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_and_parens_in_the_name() {
        let line = "4242 (tokio (runtime) w) S 1 4242 4242 0 -1 4194560 1234 0 0 0 377 42 0 0 20 0 3 0 555 1000 200 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "tokio (runtime) w");
        assert_eq!((s.utime_ticks, s.stime_ticks), (377, 42));
    }

    #[test]
    fn stat_line_of_this_process_parses() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let s = parse_stat(&text).unwrap();
        assert!(!s.comm.is_empty());
        assert!(parse_stat("12 (x) S 1 2").is_none(), "too short");
    }

    #[test]
    fn vm_rss_in_kib() {
        let status =
            "Name:\tpixelpass\nVmPeak:\t  900000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let status = "VmRSS:\t  5000 kB\nRssAnon:\t  3000 kB\nRssFile:\t  2000 kB\n";
        assert_eq!(parse_status_bytes(status, "RssAnon"), Some(3000 * 1024));
        assert_eq!(parse_status_bytes(status, "RssFile"), Some(2000 * 1024));
        assert_eq!(
            parse_status_bytes(status, "Rss"),
            None,
            "a whole field name"
        );
        assert!(rss_bytes().unwrap() > 0);
        let (rss, anon) = mem_bytes().unwrap();
        assert!(anon > 0 && anon <= rss, "RssAnon {anon} within VmRSS {rss}");
    }

    #[test]
    fn proc_stat_cpu_lines() {
        let text =
            "cpu  100 5 50 1000 10 1 7 2 0 0\ncpu0 60 3 30 500 4 1 6 1 0 0\ncpu1 40 2 20 500 6 0 1 1 0 0\nintr 1 2\n";
        assert_eq!(
            parse_proc_stat_cpu(text, 0),
            Some(CpuLine {
                busy: 60 + 3 + 30 + 1 + 6 + 1,
                idle: 504,
                softirq: 6
            })
        );
        assert_eq!(parse_proc_stat_cpu(text, 1).unwrap().softirq, 1);
        assert_eq!(parse_proc_stat_cpu(text, 2), None);
        let a = CpuLine {
            busy: 10,
            idle: 20,
            softirq: 3,
        };
        let b = CpuLine {
            busy: 15,
            idle: 22,
            softirq: 4,
        };
        assert_eq!(
            b.since(&a),
            CpuLine {
                busy: 5,
                idle: 2,
                softirq: 1
            }
        );
    }

    #[test]
    fn cpu_times_subtract_without_going_negative() {
        let a = CpuTimes {
            user: Duration::from_millis(100),
            system: Duration::from_millis(50),
        };
        let b = CpuTimes {
            user: Duration::from_millis(160),
            system: Duration::from_millis(40),
        };
        let d = b.since(&a);
        assert_eq!(d.user, Duration::from_millis(60));
        assert_eq!(d.system, Duration::ZERO);
        assert_eq!(d.total(), Duration::from_millis(60));
        let now = process_cpu().unwrap();
        assert!(now.total() > Duration::ZERO);
    }
}
