//! WebRTC options (`pixelpass host` flattens [`WebRtcArgs`]) and the
//! STUN/TURN servers handed to browsers in `Link` headers.

use std::net::SocketAddr;
use std::time::Duration;

/// Default UDP port of the shared WebRTC socket.
pub const DEFAULT_UDP_PORT: u16 = 8861;

#[derive(clap::Args, Debug, Clone)]
pub struct WebRtcArgs {
    /// UDP address of the ONE socket all WebRTC viewers use. Bound to
    /// 0.0.0.0 (or [::]) every interface address is offered to browsers; bound
    /// to one address, only that one.
    #[arg(
        long = "webrtc-udp",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:8861"
    )]
    pub webrtc_udp: SocketAddr,

    /// An address browsers can reach this host at that it does not see on its
    /// own interfaces (a router's port forward, a cloud 1:1 NAT). HOST is an IP
    /// or a name (resolved at start); with :PORT when the router maps another
    /// port. Repeatable.
    #[arg(long = "public-host", value_name = "HOST[:PORT]")]
    pub public_host: Vec<String>,

    /// A STUN/TURN server for browsers, sent in `Link: <…>; rel="ice-server"`
    /// headers. Repeatable. TURN credentials go in the URL:
    /// `turn:USER:PASSWORD@HOST:PORT?transport=udp` (also `turns:`);
    /// e.g. `stun:stun.l.google.com:19302`.
    #[arg(long = "ice-server", value_name = "URL", value_parser = IceServer::parse)]
    pub ice_server: Vec<IceServer>,

    /// RTP payload type of H.264 as the producer writes it (each browser gets
    /// the one its offer chose).
    #[arg(long = "video-pt", value_name = "PT", default_value_t = 102, value_parser = clap::value_parser!(u8).range(96..=127))]
    pub video_pt: u8,

    /// RTP payload type of Opus as the producer writes it.
    #[arg(long = "audio-pt", value_name = "PT", default_value_t = 111, value_parser = clap::value_parser!(u8).range(96..=127))]
    pub audio_pt: u8,

    /// A WebRTC viewer that sends nothing (no ICE consent, no RTCP) for this
    /// many seconds is dropped and its slot freed; also the time a viewer has
    /// to connect after its offer was answered.
    #[arg(long = "webrtc-timeout", value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub webrtc_timeout: u64,

    /// The path a reverse proxy puts in front of every URL (`/pixelpass`
    /// of `serve --public-url https://example.org/pixelpass`): WHEP's
    /// `Location` starts with it. Empty: none.
    #[arg(skip)]
    pub base_path: String,

    /// Pace each viewer's video (default on; `off` only to measure what
    /// pacing costs or prevents). Also `PIXELPASS_WEBRTC_PACING=off`, which
    /// applies where no flag is parsed (`serve`, the benchmarks).
    #[arg(long = "webrtc-pacing", value_name = "on|off", default_value = "on", env = PACING_ENV, hide = true)]
    pub webrtc_pacing: Pacing,

    /// Estimate viewers' bandwidth with transport-wide congestion control
    /// (str0m's GCC): `layers` (default) where a stream has layers to choose
    /// from; `all` on every stream (to measure what it costs); `off`: never
    /// (viewers of streams with layers stay where they start or choose).
    /// Also `PIXELPASS_WEBRTC_BWE`.
    #[arg(long = "webrtc-bwe", value_name = "layers|all|off", default_value = "layers", env = BWE_ENV, hide = true)]
    pub webrtc_bwe: Bwe,

    /// Refuse new WebRTC viewers (`503` + `Retry-After`) while the engine
    /// is busy this share of the time, in percent, so the viewers already
    /// watching keep a smooth picture; 100: never refuse. Also
    /// `PIXELPASS_WEBRTC_MAX_LOAD`.
    #[arg(long = "webrtc-max-load", value_name = "PERCENT", default_value_t = DEFAULT_MAX_LOAD, env = MAX_LOAD_ENV, value_parser = clap::value_parser!(u8).range(10..=100))]
    pub webrtc_max_load: u8,
}

/// See [`WebRtcArgs::webrtc_max_load`].
pub const DEFAULT_MAX_LOAD: u8 = 90;
/// The environment variable for the engine's load limit where no flag is parsed.
pub const MAX_LOAD_ENV: &str = "PIXELPASS_WEBRTC_MAX_LOAD";

/// The load limit [`MAX_LOAD_ENV`] asks for (10..=100), or the default; a
/// value out of range is said once and the default kept.
pub fn max_load_from_env() -> u8 {
    match std::env::var(MAX_LOAD_ENV) {
        Ok(v) => match v.trim().parse::<u8>() {
            Ok(p) if (10..=100).contains(&p) => p,
            _ => {
                tracing::warn!(
                    "{MAX_LOAD_ENV}: {v:?} is not a percentage in 10..=100; keeping {DEFAULT_MAX_LOAD}"
                );
                DEFAULT_MAX_LOAD
            }
        },
        Err(_) => DEFAULT_MAX_LOAD,
    }
}

/// The environment variable that switches pacing off (`off`) where no flag is parsed.
pub const PACING_ENV: &str = "PIXELPASS_WEBRTC_PACING";
/// The environment variable that switches bandwidth estimation off.
pub const BWE_ENV: &str = "PIXELPASS_WEBRTC_BWE";

/// Where viewers' bandwidth is estimated (see [`WebRtcArgs::webrtc_bwe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Bwe {
    #[default]
    Layers,
    All,
    Off,
}

impl Bwe {
    /// What [`BWE_ENV`] asks for (see [`from_env`]).
    pub fn from_env() -> Self {
        from_env(BWE_ENV)
    }

    /// Whether a viewer of a stream with `layers` layers is estimated.
    pub fn applies(self, layers: usize) -> bool {
        match self {
            Bwe::Layers => layers > 1,
            Bwe::All => true,
            Bwe::Off => false,
        }
    }
}

impl std::str::FromStr for Bwe {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "layers" | "on" => Ok(Bwe::Layers),
            "all" => Ok(Bwe::All),
            "off" => Ok(Bwe::Off),
            other => Err(format!("`layers`, `all` or `off`, not {other:?}")),
        }
    }
}

/// Whether each viewer's video is paced (see [`super::pacer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pacing {
    #[default]
    On,
    Off,
}

impl Pacing {
    /// What [`PACING_ENV`] asks for (see [`from_env`]).
    pub fn from_env() -> Self {
        from_env(PACING_ENV)
    }
}

/// What the environment variable `var` asks for: the default when unset; a
/// value that does not parse is said once and the default kept.
fn from_env<T: std::str::FromStr<Err = String> + Default + std::fmt::Debug>(var: &str) -> T {
    match std::env::var(var) {
        Ok(v) => v.parse().unwrap_or_else(|e| {
            let kept = T::default();
            tracing::warn!("{var}: {e}; keeping {kept:?}");
            kept
        }),
        Err(_) => T::default(),
    }
}

impl std::str::FromStr for Pacing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "1" | "true" => Ok(Pacing::On),
            "off" | "0" | "false" => Ok(Pacing::Off),
            other => Err(format!("pacing is `on` or `off`, not {other:?}")),
        }
    }
}

impl Default for WebRtcArgs {
    fn default() -> Self {
        Self {
            webrtc_udp: SocketAddr::from(([0, 0, 0, 0], DEFAULT_UDP_PORT)),
            public_host: Vec::new(),
            ice_server: Vec::new(),
            video_pt: 102,
            audio_pt: 111,
            webrtc_timeout: 15,
            base_path: String::new(),
            webrtc_pacing: Pacing::from_env(),
            webrtc_bwe: Bwe::from_env(),
            webrtc_max_load: max_load_from_env(),
        }
    }
}

impl WebRtcArgs {
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_secs(self.webrtc_timeout)
    }
}

/// A STUN or TURN server as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceServer {
    /// The URL without credentials (`turn:host:3478?transport=udp`).
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl IceServer {
    /// `stun:host[:port]`, `stuns:…`, `turn:[user:pass@]host[:port][?transport=udp|tcp]`, `turns:…`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected stun:HOST or turn:USER:PASS@HOST"))?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "stun" | "stuns" | "turn" | "turns") {
            return Err(format!(
                "{s:?}: the scheme must be stun, stuns, turn or turns"
            ));
        }
        // Everything lands in a quoted header parameter or between <>: refuse what could break out.
        if let Some(c) = s.chars().find(|c| {
            matches!(c, '"' | '<' | '>' | ',' | ';' | '\\') || c.is_whitespace() || c.is_control()
        }) {
            return Err(format!(
                "{s:?}: the character {c:?} is not allowed in an ICE server URL"
            ));
        }
        let (creds, host) = match rest.rsplit_once('@') {
            Some((creds, host)) => (Some(creds), host),
            None => (None, rest),
        };
        if host.is_empty() || host.starts_with(':') || host.starts_with('?') {
            return Err(format!("{s:?}: no host"));
        }
        let (username, credential) = match creds {
            None => (None, None),
            Some(_) if scheme.starts_with("stun") => {
                return Err(format!("{s:?}: STUN servers take no credentials"))
            }
            Some(c) => {
                let (user, pass) = c
                    .split_once(':')
                    .ok_or_else(|| format!("{s:?}: credentials must be USER:PASSWORD@"))?;
                if user.is_empty() {
                    return Err(format!("{s:?}: empty TURN user name"));
                }
                (Some(user.to_owned()), Some(pass.to_owned()))
            }
        };
        Ok(Self {
            url: format!("{scheme}:{host}"),
            username,
            credential,
        })
    }

    /// The `Link` header value (draft-ietf-wish-whep / RFC 9725 §4.6).
    pub fn link_header(&self) -> String {
        let mut v = format!("<{}>; rel=\"ice-server\"", self.url);
        if let Some(u) = &self.username {
            v.push_str(&format!("; username=\"{u}\""));
        }
        if let Some(c) = &self.credential {
            v.push_str(&format!(
                "; credential=\"{c}\"; credential-type=\"password\""
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        webrtc: WebRtcArgs,
    }

    #[test]
    fn parses_stun_and_turn_with_credentials() {
        let stun = IceServer::parse("stun:stun.example.org:19302").unwrap();
        assert_eq!(
            stun.link_header(),
            "<stun:stun.example.org:19302>; rel=\"ice-server\""
        );
        let turn =
            IceServer::parse("turn:alice:s3cr:et@turn.example.org:3478?transport=udp").unwrap();
        assert_eq!(turn.url, "turn:turn.example.org:3478?transport=udp");
        assert_eq!(
            (turn.username.as_deref(), turn.credential.as_deref()),
            (Some("alice"), Some("s3cr:et"))
        );
        assert_eq!(
            turn.link_header(),
            "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"alice\"; \
             credential=\"s3cr:et\"; credential-type=\"password\""
        );
    }

    #[test]
    fn refuses_bad_ice_servers() {
        for bad in [
            "http://x",
            "stun",
            "stun:",
            "stun:u:p@host",
            "turn:user@host",
            "turn:a:b@h\"x",
            "turn:a:b@h>, <x",
        ] {
            assert!(IceServer::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn defaults_and_repeatable_flags() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.webrtc.webrtc_udp, "0.0.0.0:8861".parse().unwrap());
        assert_eq!(
            (
                cli.webrtc.video_pt,
                cli.webrtc.audio_pt,
                cli.webrtc.webrtc_timeout
            ),
            (102, 111, 15)
        );
        let cli = Cli::try_parse_from([
            "x",
            "--webrtc-udp",
            "127.0.0.1:0",
            "--public-host",
            "203.0.113.7",
            "--public-host",
            "example.org:40000",
            "--ice-server",
            "stun:a:1",
            "--ice-server",
            "turn:u:p@b:2",
            "--video-pt",
            "96",
        ])
        .unwrap();
        assert_eq!(
            cli.webrtc.public_host,
            vec!["203.0.113.7", "example.org:40000"]
        );
        assert_eq!(cli.webrtc.ice_server.len(), 2);
        assert_eq!(cli.webrtc.video_pt, 96);
        assert!(
            Cli::try_parse_from(["x", "--video-pt", "8"]).is_err(),
            "static payload types are refused"
        );
    }
}
