//! Instruction counts of this process over a window, when it runs under
//! `valgrind --tool=callgrind`: [`Window::start`] zeroes the counters
//! (`callgrind_control -z PID`), [`Window::instructions`] reads them
//! (`callgrind_control -e Ir PID`, every thread summed). Instructions, not
//! seconds: the same binary and input give the same count whatever else the
//! machine does, so small per-packet differences show on a noisy machine.

use std::process::Command;

use anyhow::{bail, Context};

/// A window whose instructions are counted.
pub struct Window {
    pid: u32,
}

impl Window {
    /// Zero this process's counters. Fails (saying how to run it) when the
    /// process is not under callgrind.
    pub fn start() -> anyhow::Result<Self> {
        let pid = std::process::id();
        control(pid, &["-z"])?;
        Ok(Self { pid })
    }

    /// Instructions executed by every thread since [`start`](Self::start).
    pub fn instructions(&self) -> anyhow::Result<u64> {
        let out = control(self.pid, &["-e", "Ir"])?;
        parse_totals(&out)
            .with_context(|| format!("callgrind_control printed no thread totals:\n{out}"))
    }
}

fn control(pid: u32, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .context("cannot run callgrind_control (Debian package valgrind)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("not detected") {
        bail!(
            "--callgrind: this process ({pid}) is not running under callgrind; run it as \
             `valgrind --tool=callgrind pixelpass-bench whep-fanout --synthetic --callgrind --client-exe PATH …`"
        );
    }
    Ok(text)
}

/// The sum of the `Th N  count` lines after `Totals:`.
fn parse_totals(text: &str) -> Option<u64> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Totals:"));
    lines.next()?;
    let mut sum = None;
    for l in lines {
        let mut words = l.split_whitespace();
        if words.next() != Some("Th") {
            break;
        }
        let count: u64 = words.nth(1)?.replace(',', "").parse().ok()?;
        *sum.get_or_insert(0) += count;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::parse_totals;

    #[test]
    fn thread_totals_are_summed() {
        let text = "PID 28928: pixelpass-bench whep-fanout\n\n  Totals:         Ir \n   Th 1            0 \n   Th 2  107,782,435 \n   Th 3    2,657,194 \n   Th 4            0 \n\n";
        assert_eq!(parse_totals(text), Some(110_439_629));
        assert_eq!(parse_totals("PID 1: x\n  OK.\n"), None);
    }
}
