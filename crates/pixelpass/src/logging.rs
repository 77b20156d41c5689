//! Logging for the binaries: stderr, filtered by `PIXELPASS_LOG` (or `RUST_LOG`).
//!
//! Under systemd (`JOURNAL_STREAM` names our stderr) each line starts with a
//! syslog priority (`<3>` error … `<7>` debug) that the journal turns into the
//! entry's level, and carries no timestamp of ours (the journal adds its own).
//! Elsewhere: a timestamp, the level, and colours on a terminal.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Logs go to stderr; `PIXELPASS_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init() {
    let filter = std::env::var("PIXELPASS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    // zbus (under ashpd) warns about routine portal traffic: only its errors, unless asked.
    let filter = if filter.contains("zbus") {
        filter
    } else {
        format!("{filter},zbus=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,zbus=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if under_journal() {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_level(false)
            .with_target(false);
        let _ = builder
            .with_ansi(false)
            .event_format(Journal(format))
            .try_init();
    } else {
        let _ = builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
}

/// Is our stderr the journal's stream? systemd sets `JOURNAL_STREAM=DEV:INODE`
/// of the stream it connected; a child whose stderr was redirected elsewhere
/// inherits the variable but not the stream, hence the comparison.
fn under_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| names_stream(&var, m.dev(), m.ino()))
}

/// `JOURNAL_STREAM`'s `DEV:INODE` (decimal) names this device and inode.
fn names_stream(var: &str, dev: u64, ino: u64) -> bool {
    var.split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// The syslog priority the journal reads from a line's `<N>` prefix.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Lines for the journal: `<priority>` then the inner format.
struct Journal<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journal<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_carry_a_priority_and_no_timestamp() {
        let out = Lines::default();
        let sink = out.clone();
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_level(false)
            .with_target(false);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .event_format(Journal(format))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(stream = "lobby", "ffmpeg exited");
            tracing::warn!("slow viewer");
            tracing::info!("reloaded");
            tracing::debug!("detail");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<3>ffmpeg exited stream=\"lobby\"",
                "<4>slow viewer",
                "<6>reloaded",
                "<7>detail"
            ]
        );
    }

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(names_stream("64:12345", 64, 12345));
        assert!(
            !names_stream("64:12345", 64, 12346),
            "another stream: inherited, not ours"
        );
        assert!(!names_stream("garbage", 64, 12345));
        assert!(!names_stream("", 0, 0));
    }
}
