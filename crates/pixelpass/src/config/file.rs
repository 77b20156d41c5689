//! The `pixelpass serve` config file (TOML): server keys plus `[[stream]]` tables.
//!
//! Every error names the file and a line, because an operator with twenty streams needs to
//! know *which* `input` is wrong. Streams are deserialized as `toml::Spanned` so a
//! [`FieldError`] from [`StreamConfig::validate`] can be placed on the line of its key.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::stream::{FieldError, StreamConfig};
use super::toml_lines::{key_of, TomlLines};

/// Server settings; command-line flags and environment variables are merged in by the caller.
#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    pub listen: Option<SocketAddr>,
    pub webrtc_udp: Option<SocketAddr>,
    pub api_token: Option<String>,
    pub public_host: Vec<String>,
    /// Open HTTP connections at most (`--max-connections` overrides).
    pub max_connections: Option<usize>,
    pub streams: Vec<StreamConfig>,
}

/// A config file problem; `Display` is one line: `file:line: message` (or a read failure).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source} (check the --config path)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, if it is about the file's content.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { line, .. } => Some(*line),
        }
    }
}

/// The file as written; the `stream` key is singular because each table is one stream.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    listen: Option<Spanned<String>>,
    webrtc_udp: Option<Spanned<String>>,
    api_token: Option<Spanned<String>>,
    #[serde(default)]
    public_host: Option<Spanned<Vec<String>>>,
    max_connections: Option<Spanned<i64>>,
    #[serde(default)]
    stream: Vec<Spanned<StreamConfig>>,
}

/// Turns byte offsets and table ranges into `file:line` errors.
struct Locator<'a> {
    path: &'a Path,
    lines: TomlLines<'a>,
}

impl Locator<'_> {
    fn at_line(&self, line: usize, message: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            message: message.to_string(),
        }
    }

    fn error(&self, offset: usize, message: impl fmt::Display) -> ConfigError {
        self.at_line(self.lines.line_of(offset), message)
    }

    /// A toml error as one line, prefixed with the key of the offending line when toml's
    /// message does not name it (type errors only mention the value).
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map_or(0, |s| s.start);
        let mut message = e.message().trim_end().replace('\n', "; ");
        let key = key_of(self.lines.line_text(offset));
        if let Some(key) = key.filter(|k| !message.contains(&format!("`{k}`"))) {
            message = format!("`{key}`: {message}");
        }
        self.error(offset, message)
    }
}

fn parse_addr(
    at: &Locator,
    key: &str,
    value: Option<Spanned<String>>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    value.get_ref().parse().map(Some).map_err(|_| {
        at.error(
            value.span().start,
            format!(
                "`{key}`: \"{}\" is not an address: write IP:PORT, e.g. \"127.0.0.1:8080\"",
                value.get_ref()
            ),
        )
    })
}

impl ServeConfig {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ServeConfig::parse(path, &text)
    }

    /// Parses and validates `text`; `path_for_messages` only appears in error messages.
    pub fn parse(path_for_messages: &Path, text: &str) -> Result<ServeConfig, ConfigError> {
        let at = Locator {
            path: path_for_messages,
            lines: TomlLines::new(text),
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| at.toml_error(&e))?;
        let listen = parse_addr(&at, "listen", raw.listen)?;
        let webrtc_udp = parse_addr(&at, "webrtc_udp", raw.webrtc_udp)?;
        if let Some(token) = &raw.api_token {
            if token.get_ref().chars().count() < 8 {
                return Err(at.error(token.span().start, "`api_token`: must be at least 8 characters (or remove it and set PIXELPASS_API_TOKEN)"));
            }
        }
        let public_host = match raw.public_host {
            None => Vec::new(),
            Some(hosts) => {
                if hosts
                    .get_ref()
                    .iter()
                    .any(|h| h.trim().is_empty() || h.contains(char::is_whitespace))
                {
                    return Err(at.error(
                        hosts.span().start,
                        "`public_host`: entries must be non-empty host names without spaces",
                    ));
                }
                hosts.into_inner()
            }
        };
        let max_connections = match raw.max_connections {
            None => None,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(v) if v >= 2 => Some(v),
                _ => {
                    return Err(at.error(
                        n.span().start,
                        "`max_connections`: must be a whole number of at least 2 (or remove it: the default follows the open-file limit)",
                    ))
                }
            },
        };
        let streams = check_streams(&at, raw.stream)?;
        Ok(ServeConfig {
            listen,
            webrtc_udp,
            api_token: raw.api_token.map(Spanned::into_inner),
            public_host,
            max_connections,
            streams,
        })
    }
}

fn check_streams(
    at: &Locator,
    streams: Vec<Spanned<StreamConfig>>,
) -> Result<Vec<StreamConfig>, ConfigError> {
    let starts: Vec<usize> = streams.iter().map(|s| s.span().start).collect();
    let ranges = at.lines.table_ranges(&starts);
    let mut seen: Vec<(&str, Option<&str>, Range<usize>)> = Vec::new();
    for (stream, table) in streams.iter().zip(ranges) {
        let cfg = stream.get_ref();
        let line_of = |field: &str| at.lines.field_line(table.clone(), field);
        if let Err(FieldError { field, message }) = cfg.validate() {
            let message = format!("stream {:?}: `{field}`: {message}", cfg.id);
            return Err(at.at_line(line_of(&field), message));
        }
        for (id, token, earlier) in &seen {
            if *id == cfg.id {
                let first = at.lines.field_line(earlier.clone(), "id");
                let message = format!(
                    "stream {:?}: duplicate id (also used at line {first}); give each stream its own id",
                    cfg.id
                );
                return Err(at.at_line(line_of("id"), message));
            }
            if token.is_some() && *token == cfg.token.as_deref() {
                let first = at.lines.field_line(earlier.clone(), "token");
                let message = format!(
                    "stream {:?}: `token` is already used by stream {id:?} at line {first}; viewer tokens must be unique",
                    cfg.id
                );
                return Err(at.at_line(line_of("token"), message));
            }
        }
        seen.push((&cfg.id, cfg.token.as_deref(), table));
    }
    Ok(streams.into_iter().map(Spanned::into_inner).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"listen = "127.0.0.1:8080"          # HTTP: API, player pages, stream.ts, WHEP (flag --listen overrides)
webrtc_udp = "127.0.0.1:8189"      # the one UDP socket for all peers (flag --webrtc-udp overrides)
api_token = "change-me"            # or PIXELPASS_API_TOKEN

[[stream]]
id = "lobby"
token = "watch-lobby"              # viewer URLs: /watch-lobby/ , /watch-lobby/stream.ts , /watch-lobby/whep
input = ["-re", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=440"]
autostart = true
reconnect = true
reconnect_delay_seconds = 1
webrtc = { enabled = true, video_pt = 102, audio_pt = 111 }
"#;

    fn parse_err(text: &str) -> (usize, String) {
        let err = ServeConfig::parse(Path::new("pixelpass.toml"), text).unwrap_err();
        (err.line().unwrap(), err.to_string())
    }

    #[test]
    fn the_documented_example_parses() {
        let cfg = ServeConfig::parse(Path::new("pixelpass.toml"), EXAMPLE).unwrap();
        assert_eq!(cfg.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(cfg.webrtc_udp, Some("127.0.0.1:8189".parse().unwrap()));
        assert_eq!(cfg.api_token.as_deref(), Some("change-me"));
        assert!(cfg.public_host.is_empty());
        let [s] = cfg.streams.as_slice() else {
            panic!("one stream expected")
        };
        assert_eq!(
            (s.id.as_str(), s.token.as_deref()),
            ("lobby", Some("watch-lobby"))
        );
        assert_eq!(s.input.len(), 9);
        assert!(s.autostart && s.reconnect && !s.on_demand);
        assert_eq!(s.reconnect_delay_seconds, 1.0);
        assert_eq!((s.webrtc.video_pt(), s.webrtc.audio_pt()), (102, 111));
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        let cfg = ServeConfig::parse(Path::new("p.toml"), "").unwrap();
        assert!(cfg.listen.is_none() && cfg.streams.is_empty());
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let text = EXAMPLE.replace("autostart = true", "autostart = tru e");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 9, "{msg}");
        assert!(msg.starts_with("pixelpass.toml:9: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let (line, msg) = parse_err(&EXAMPLE.replace("delay_seconds = 1", "delay_seconds = \"1\""));
        assert_eq!(line, 11);
        assert!(
            msg.starts_with("pixelpass.toml:11: `reconnect_delay_seconds`: invalid type"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_at_their_line() {
        let (line, msg) = parse_err(&EXAMPLE.replace("reconnect = true", "reconect = true"));
        assert_eq!(line, 10, "{msg}");
        assert!(msg.contains("reconect"), "{msg}");
        let (line, msg) = parse_err(&format!("lisen = \"x\"\n{EXAMPLE}"));
        assert_eq!(line, 1, "{msg}");
        let (line, msg) = parse_err(&EXAMPLE.replace("id = \"lobby\"\n", ""));
        assert_eq!(
            (line, msg.contains("missing field `id`")),
            (5, true),
            "{msg}"
        );
        let (line, msg) = parse_err(&EXAMPLE.replace("[[stream]]", "[[streams]]"));
        assert_eq!(line, 5, "{msg}");
    }

    #[test]
    fn bad_payload_type_points_at_the_webrtc_line() {
        let (line, msg) = parse_err(&EXAMPLE.replace("video_pt = 102", "video_pt = 5"));
        assert_eq!(line, 12);
        assert_eq!(
            msg,
            "pixelpass.toml:12: stream \"lobby\": `webrtc.video_pt`: must be 96..=127 (or 0 for the default 102), got 5"
        );
    }

    #[test]
    fn payload_type_in_a_sub_table_or_dotted_key_is_located() {
        let sub = EXAMPLE.replace(
            "webrtc = { enabled = true, video_pt = 102, audio_pt = 111 }",
            "[stream.webrtc]\naudio_pt = 1",
        );
        assert_eq!(parse_err(&sub).0, 12);
        let dotted = EXAMPLE.replace(
            "webrtc = { enabled = true, video_pt = 102, audio_pt = 111 }",
            "webrtc.enabled = true\nwebrtc.audio_pt = 1",
        );
        assert_eq!(parse_err(&dotted).0, 13);
    }

    #[test]
    fn validation_error_in_second_stream_uses_that_table() {
        let text =
            format!("{EXAMPLE}\n[[stream]]\nid = \"b\"\ninput = [\"-i\", \"x\"]\nlinger = -1\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 17, "{msg}");
        assert!(msg.contains("stream \"b\": `linger`"), "{msg}");
    }

    #[test]
    fn missing_key_falls_back_to_the_table_line() {
        let text = format!("{EXAMPLE}\n[[stream]]\nid = \"b\"\ninput = [\"x\"]\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 16, "{msg}"); // `input` line
        let text = format!("{EXAMPLE}\n[[stream]]\nid = \"b\"\ninput = [\"-i\", \"x\"]\nwebrtc = {{ enabled = false }}\nhttp_ts = false\n");
        assert_eq!(parse_err(&text).0, 18); // `http_ts` line
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let text = format!("{EXAMPLE}\n[[stream]]\ninput = [\"-i\", \"x\"]\nid = \"lobby\"\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 16, "{msg}");
        assert!(msg.contains("duplicate id (also used at line 6)"), "{msg}");
    }

    #[test]
    fn duplicate_tokens_are_errors() {
        let text = format!(
            "{EXAMPLE}\n[[stream]]\nid = \"b\"\ninput = [\"-i\", \"x\"]\ntoken = \"watch-lobby\"\n"
        );
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 17, "{msg}");
        assert!(
            msg.contains("already used by stream \"lobby\" at line 7"),
            "{msg}"
        );
    }

    #[test]
    fn server_keys_are_checked_with_lines() {
        let (line, msg) = parse_err(&EXAMPLE.replace("\"change-me\"", "\"short\""));
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("`api_token`"), "{msg}");
        let (line, msg) = parse_err(&EXAMPLE.replace("127.0.0.1:8189", "localhost"));
        assert_eq!(line, 2, "{msg}");
        let (line, _) = parse_err(&format!("public_host = [\"a b\"]\n{EXAMPLE}"));
        assert_eq!(line, 1);
        let cfg = ServeConfig::parse(
            Path::new("p"),
            &format!("public_host = [\"tv.example\"]\n{EXAMPLE}"),
        )
        .unwrap();
        assert_eq!(cfg.public_host, ["tv.example"]);
        let cfg = ServeConfig::parse(
            Path::new("x.toml"),
            &format!("max_connections = 500\n{EXAMPLE}"),
        )
        .expect("valid");
        assert_eq!(cfg.max_connections, Some(500));
        let (line, msg) = parse_err(&format!("max_connections = 0\n{EXAMPLE}"));
        assert_eq!(line, 1);
        assert!(msg.contains("`max_connections`"), "{msg}");
    }

    #[test]
    fn load_reports_unreadable_files() {
        let err = ServeConfig::load(Path::new("/nonexistent/pixelpass.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/pixelpass.toml: cannot read"),
            "{err}"
        );
        assert_eq!(err.line(), None);
    }
}
