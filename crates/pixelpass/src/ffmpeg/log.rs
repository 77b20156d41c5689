//! FFmpeg's log as an operator needs it: bounded, yet a start failure
//! survives a flood of warnings, and the exit summary is FFmpeg's own words.
//!
//! - [`RunLog`]: per run, its first lines (where start failures are) and its
//!   last lines (where crashes are), consecutive identical lines counted
//!   instead of stored again; the previous run is kept beside the current one;
//! - [`summarize_exit`]: the `[fatal]` and `[error]` lines that carry text;
//! - [`mask`]: credentials in URLs (`rtmp://user:***@…`, `?passphrase=***`)
//!   hidden in the command and in every stored line.

use std::collections::VecDeque;

pub use crate::token::mask;

/// Longest line kept, in bytes; FFmpeg can print huge lines (e.g. dumped metadata).
pub const MAX_LINE_BYTES: usize = 1024;
/// First lines of a run kept.
pub const HEAD_LINES: usize = 20;
/// Last lines of a run kept.
pub const TAIL_LINES: usize = 60;

fn cut(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut end = line.len().min(MAX_LINE_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

/// One run's lines: the head, the tail, and how many fell in between.
#[derive(Debug, Clone, Default)]
struct Run {
    head: Vec<String>,
    tail: VecDeque<String>,
    dropped: u64,
    /// Times the last stored line came again right after itself.
    repeats: u64,
}

impl Run {
    fn last(&self) -> Option<&String> {
        self.tail.back().or(self.head.last())
    }

    fn store(&mut self, line: String) {
        if self.head.len() < HEAD_LINES {
            self.head.push(line);
            return;
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
            self.dropped += 1;
        }
        self.tail.push_back(line);
    }

    fn push(&mut self, line: String) {
        if self.last() == Some(&line) {
            self.repeats += 1;
            return;
        }
        self.flush_repeats();
        self.store(line);
    }

    fn flush_repeats(&mut self) {
        if self.repeats > 0 {
            let n = std::mem::take(&mut self.repeats);
            self.store(format!("pixelpass: (the line above came {n} more times)"));
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut out = self.head.clone();
        if self.dropped > 0 {
            out.push(format!("pixelpass: ({} lines left out)", self.dropped));
        }
        out.extend(self.tail.iter().cloned());
        if self.repeats > 0 {
            out.push(format!(
                "pixelpass: (the line above came {} more times)",
                self.repeats
            ));
        }
        out
    }
}

/// The log of a stream's FFmpeg: the current run and the one before it.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    previous: Option<Run>,
    current: Run,
}

impl RunLog {
    /// A new FFmpeg run begins: the current one becomes the previous one.
    pub fn new_run(&mut self) {
        let done = std::mem::take(&mut self.current);
        self.previous = Some(done);
    }

    /// Store a line, masked and cut to [`MAX_LINE_BYTES`].
    pub fn push(&mut self, line: &str) {
        self.current.push(cut(&mask(line)));
    }

    /// Oldest first: the previous run, then the current one.
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.previous.as_ref().map(Run::lines).unwrap_or_default();
        out.extend(self.current.lines());
        out
    }

    /// The current run's lines only.
    pub fn current_run(&self) -> Vec<String> {
        self.current.lines()
    }
}

/// The text of a line FFmpeg logged at `[fatal]` or `[error]` level (with
/// `-loglevel level+…`), when it says something.
fn error_text(line: &str) -> Option<&str> {
    let at = ["[fatal]", "[error]"]
        .iter()
        .filter_map(|tag| line.find(tag).map(|i| i + tag.len()))
        .min()?;
    let text = line[at..].trim_start_matches(':').trim();
    let text = text.trim_end_matches("--").trim();
    (!text.is_empty()).then_some(text)
}

/// Why FFmpeg exited, in its own words: the `[fatal]` and `[error]` lines
/// with text, in order, repeats dropped, at most four (the cause comes
/// first: "Unable to parse option value …" before "Error setting up codec
/// context options."). Without levelled lines, the last line that looks
/// like an error, else the last line. A missing audio stream gets a hint.
pub fn summarize_exit(log: &[String]) -> Option<String> {
    let lines: Vec<&str> = log
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("pixelpass: "))
        .collect();
    let hint = if lines
        .iter()
        .any(|l| l.contains("does not contain any stream"))
    {
        " (if the input has no sound, set `audio = false` for this stream)"
    } else {
        ""
    };
    let mut said: Vec<&str> = Vec::new();
    for text in lines.iter().filter_map(|l| error_text(l)) {
        if !said.contains(&text) && said.len() < 4 {
            said.push(text);
        }
    }
    if !said.is_empty() {
        return Some(format!("{}{hint}", said.join(" / ")));
    }
    const MARKERS: [&str; 4] = ["Error", "error", "Invalid", "No such"];
    lines
        .iter()
        .rev()
        .find(|l| MARKERS.iter().any(|m| l.contains(m)))
        .or(lines.last())
        .map(|l| format!("{l}{hint}"))
}

/// Where a URL listens, without path, query or credentials: `rtmp://0.0.0.0:1935`
/// (an RTMP stream key or an SRT passphrase never shows).
pub fn endpoint(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() {
        host.to_owned()
    } else {
        format!("{scheme}://{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_start_failure_survives_a_flood_of_warnings() {
        let mut log = RunLog::default();
        log.push("[fatal] Error opening input: nope");
        for i in 0..500 {
            log.push(&format!(
                "[warning] frame {i}: non-existing PPS 0 referenced"
            ));
        }
        let all = log.lines();
        assert!(all.len() <= HEAD_LINES + TAIL_LINES + 2, "{}", all.len());
        assert_eq!(all[0], "[fatal] Error opening input: nope");
        assert!(
            all.contains(&"pixelpass: (421 lines left out)".to_string()),
            "{all:?}"
        );
        assert_eq!(
            all.last().unwrap(),
            "[warning] frame 499: non-existing PPS 0 referenced"
        );
    }

    #[test]
    fn repeated_lines_are_counted_not_stored() {
        let mut log = RunLog::default();
        for _ in 0..1000 {
            log.push("[warning] non-existing PPS 0 referenced");
        }
        assert_eq!(
            log.lines(),
            [
                "[warning] non-existing PPS 0 referenced",
                "pixelpass: (the line above came 999 more times)"
            ]
        );
        log.push("[error] then something else");
        assert_eq!(log.lines().len(), 3, "{:?}", log.lines());
    }

    #[test]
    fn the_previous_run_is_kept_beside_the_current_one() {
        let mut log = RunLog::default();
        log.push("run 1");
        log.new_run();
        log.push("run 2");
        log.new_run();
        log.push("run 3");
        assert_eq!(log.lines(), ["run 2", "run 3"]);
        assert_eq!(log.current_run(), ["run 3"]);
        log.push(&"é".repeat(1000)); // 2000 bytes: cut on a char boundary
        assert_eq!(log.current_run()[1].len(), MAX_LINE_BYTES);
    }

    #[test]
    fn the_summary_is_ffmpegs_own_words_cause_first() {
        // Debian 12's ffmpeg 5.1, `-profile:v baseline -c:v copy`.
        let log = lines(&[
            "[warning] Multiple -c, -codec options specified for stream 0, only the last option '-c:v copy' will be used.",
            "[NULL @ 0x564bc7936a80] [Eval @ 0x7ffc81e8ae90] [error] Undefined constant or missing '(' in 'baseline'",
            "[NULL @ 0x564bc7936a80] [error] Unable to parse option value \"baseline\"",
            "[NULL @ 0x564bc7936a80] [error] Error setting option profile to value baseline.",
            "[fatal] Error setting up codec context options.",
            "[error] Error initializing output stream 0:0 -- ",
            "[error] ",
            "pixelpass: ffmpeg exited",
        ]);
        assert_eq!(
            summarize_exit(&log).unwrap(),
            "Undefined constant or missing '(' in 'baseline' / Unable to parse option value \"baseline\" / \
             Error setting option profile to value baseline. / Error setting up codec context options."
        );
        let x264 = lines(&["x264 [error]: invalid profile: nonsense", "[error] "]);
        assert_eq!(summarize_exit(&x264).unwrap(), "invalid profile: nonsense");
        assert_eq!(summarize_exit(&lines(&["a", "b", "  "])).unwrap(), "b");
        assert_eq!(
            summarize_exit(&lines(&["", " ", "[error] "])).unwrap(),
            "[error]"
        );
        assert_eq!(summarize_exit(&[]), None);
    }

    #[test]
    fn missing_audio_gets_a_hint() {
        let log = lines(&[
            "[error] Output file #1 does not contain any stream",
            "[error] Conversion failed!",
        ]);
        let summary = summarize_exit(&log).unwrap();
        assert!(
            summary.starts_with("Output file #1 does not contain any stream"),
            "{summary}"
        );
        assert!(summary.contains("`audio = false`"), "{summary}");
    }

    #[test]
    fn endpoints_show_no_credentials() {
        assert_eq!(
            endpoint("srt://0.0.0.0:9000?mode=listener&passphrase=abcdefghij"),
            "srt://0.0.0.0:9000"
        );
        assert_eq!(
            endpoint("rtmp://user:pw@0.0.0.0:1935/live/stream-key"),
            "rtmp://0.0.0.0:1935"
        );
        assert_eq!(endpoint("0.0.0.0:5000"), "0.0.0.0:5000");
    }
}
