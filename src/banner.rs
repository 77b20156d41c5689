//! What `host` prints at start: the viewer URLs and how to watch them.

use std::io::Write;
use std::net::SocketAddr;

use serde::Serialize;

use pixelpass::egress::publish::{PublishState, PublishStatus};
use pixelpass::{net, view};

pub struct Info<'a> {
    pub local: SocketAddr,
    pub token: &'a str,
    pub source: &'a str,
    pub encoder: String,
    pub encoder_element: &'a str,
    /// The layers, e.g. "1280×720 4000k, 640×360 1000k".
    pub layers: &'a str,
    pub max_viewers: u32,
    pub linger: f64,
    /// The WebRTC UDP socket (firewalls must let it through).
    pub webrtc_udp: SocketAddr,
    /// The listener speaks HTTPS.
    pub https: bool,
    /// `--publish` targets, after their first answer (empty without `--publish`).
    pub publish: &'a [PublishStatus],
}

impl Info<'_> {
    fn bases(&self) -> Vec<String> {
        net::reachable_addrs(self.local)
            .into_iter()
            .map(|ip| net::http_base(ip, self.local.port(), self.https))
            .collect()
    }

    fn stream_urls(&self) -> Vec<String> {
        self.bases()
            .iter()
            .map(|b| format!("{b}/{}/stream.ts", self.token))
            .collect()
    }

    fn player_urls(&self) -> Vec<String> {
        self.bases()
            .iter()
            .map(|b| format!("{b}/{}/", self.token))
            .collect()
    }
}

#[derive(Serialize)]
struct JsonBanner<'a> {
    listen: String,
    token: &'a str,
    stream_url: String,
    status_url: String,
    player_url: String,
    whep_url: String,
    urls: Vec<String>,
    player_urls: Vec<String>,
    webrtc_udp: String,
    max_viewers: u32,
    encoder: &'a str,
    layers: &'a str,
    source: &'a str,
    /// Per `--publish` URL: its state and the relay's page for viewers.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    publish: &'a [PublishStatus],
    /// Where viewers watch through a relay: the first relay page, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    watch_url: Option<&'a str>,
}

/// One JSON line on stdout (for scripts and tests).
pub fn print_json(info: &Info<'_>) -> anyhow::Result<()> {
    let bases = info.bases();
    let first = bases.first().cloned().unwrap_or_default();
    let line = serde_json::to_string(&JsonBanner {
        listen: info.local.to_string(),
        token: info.token,
        stream_url: format!("{first}/{}/stream.ts", info.token),
        status_url: format!("{first}/{}/status", info.token),
        player_url: format!("{first}/{}/", info.token),
        whep_url: format!("{first}/{}/whep", info.token),
        urls: info.stream_urls(),
        player_urls: info.player_urls(),
        webrtc_udp: info.webrtc_udp.to_string(),
        max_viewers: info.max_viewers,
        encoder: info.encoder_element,
        layers: info.layers,
        source: info.source,
        publish: info.publish,
        watch_url: info.publish.iter().find_map(|p| p.player_page.as_deref()),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

pub fn print_human(info: &Info<'_>) {
    let urls = info.stream_urls();
    let first = urls.first().cloned().unwrap_or_default();
    let linger = if info.linger == 0.0 {
        "stops as soon as the last one leaves".to_owned()
    } else {
        format!("stops {} s after the last one leaves", info.linger)
    };
    let mut s = String::new();
    s.push_str(&format!(
        "\npixelpass is sharing: {} · encoder {}\nlayers: {}\n\n",
        info.source, info.encoder, info.layers
    ));
    s.push_str("Open in a browser (private: anyone with the link can watch):\n");
    for u in info.player_urls() {
        s.push_str(&format!("  {u}\n"));
    }
    s.push_str("\nOr in a player (HTTP MPEG-TS):\n");
    for u in &urls {
        s.push_str(&format!("  {u}\n"));
    }
    s.push_str("\nWatch with:\n");
    s.push_str(&format!(
        "  {}\n",
        view::shell_command(view::Player::Mpv, &first)
    ));
    s.push_str(&format!(
        "  ffplay -fflags nobuffer -flags low_delay -framedrop {first}\n"
    ));
    s.push_str(&format!("  vlc --network-caching=200 {first}\n"));
    s.push_str(&format!("  pixelpass view {first}\n"));
    publish_lines(&mut s, info.publish);
    let capture = if info.publish.is_empty() {
        format!("Capture starts when the first viewer connects and {linger}.")
    } else {
        "Capture runs all the time while publishing.".to_owned()
    };
    s.push_str(&format!(
        "\nUp to {} local viewer{} at once. {capture}\n",
        info.max_viewers,
        if info.max_viewers == 1 { "" } else { "s" }
    ));
    s.push_str(&format!(
        "Browsers get the picture over WebRTC on UDP {} (let it through a firewall).\n",
        info.webrtc_udp
    ));
    s.push_str("Press Ctrl+C to stop.\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// Where the stream is published, and where its viewers watch.
fn publish_lines(s: &mut String, publish: &[PublishStatus]) {
    for p in publish {
        s.push_str(&format!("\nPublishing to {}\n", p.url));
        match (&p.player_page, p.state) {
            (Some(page), _) => s.push_str(&format!("  viewers watch at: {page}\n")),
            (None, PublishState::Retrying | PublishState::Connecting) => {}
            (None, _) => s.push_str("  (the relay named no page for viewers)\n"),
        }
        if p.state == PublishState::Retrying {
            let why = p.last_error.as_deref().unwrap_or("no answer");
            s.push_str(&format!(
                "  not reachable yet: {why}\n  retrying with back-off until it is back\n"
            ));
        }
    }
}
