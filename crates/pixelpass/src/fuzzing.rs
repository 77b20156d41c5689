//! The fuzz targets' way in (`fuzz/`, cargo-fuzz), built only with the
//! `fuzzing` feature: each function hands untrusted input to the same code
//! the server runs on it — nothing here parses anything itself. Not an API.
//!
//! - [`ts`]: MPEG-TS packets, the framer, the chunker and the hub's keyframe
//!   marks (what a producer's muxer output goes through);
//! - [`rtp`]: datagrams through an RTP ingest leg (the gate, the hub, SPS learning);
//! - [`h264`]: the Annex B NAL scanner, slice headers and the SPS parsers;
//! - [`Sdp`]: a WHEP viewer's and a WHIP publisher's offer, str0m included;
//! - [`Http`]: `serve`'s whole router, called as a tower service;
//! - [`serve_toml`], [`stream_json`]: the config file, the API's stream config;
//! - [`ffmpeg_output`]: FFmpeg's `-progress` and log lines.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use futures_util::FutureExt;
use tower::ServiceExt;

use crate::config::stream::StreamConfig;
use crate::config::ServeConfig;
use crate::egress::whep::peer::RtcFactory;
use crate::egress::whep::{WebRtcArgs, Whep};
use crate::ffmpeg::legs::Legs;
use crate::ffmpeg::log::{endpoint, mask, summarize_exit, RunLog};
use crate::ffmpeg::progress::ProgressParser;
use crate::http::api::{self, Api};
use crate::hub::{Hub, HubConfig, LayerInfo, Track};
use crate::ingest::rtp::{Leg, RtpCounters};
use crate::media::ts::packet::{self, Packet, PACKET_LEN};
use crate::media::ts::{Chunker, Framer, Output};
use crate::media::{h264 as nal, rtp as rtp_media, sps};
use crate::registry::Registry;
use crate::restream::Streams;
use crate::whip::{Whip, WhipConfig};

/// MPEG-TS bytes, in splits the input chooses (its first byte), through the
/// framer and chunker on their own (checking what they promise: whole
/// packets out, chunks of whole packets) and through a hub with a viewer.
pub fn ts(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).max(1);
    let mut framer = Framer::new();
    for part in data.chunks(split) {
        framer.push(part, |p| {
            assert_eq!(p.len(), PACKET_LEN, "the framer hands on whole packets");
            assert_eq!(
                p[0],
                packet::SYNC_BYTE,
                "the framer hands on synced packets"
            );
            packet_fields(p);
        });
    }
    let mut chunker = Chunker::new();
    let mut out = Vec::new();
    for part in data.chunks(split) {
        chunker.push(part, &mut out);
    }
    chunker.flush(&mut out);
    for o in &out {
        let bytes = match o {
            Output::Psi(b) => b,
            Output::Chunk { data, .. } => data,
        };
        assert_eq!(bytes.len() % PACKET_LEN, 0, "chunks are whole packets");
    }
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut viewer = hub.subscribe(now);
    let mut got = Vec::new();
    for (i, part) in data.chunks(split).enumerate() {
        let at = now + Duration::from_millis(i as u64);
        hub.push_ts(part, at);
        if i % 3 == 0 {
            hub.flush_ts(at);
        }
        viewer.drain_into(at, &mut got, 64);
    }
    hub.flush_ts(now + Duration::from_secs(1));
    viewer.drain_into(now + Duration::from_secs(1), &mut got, usize::MAX);
    let mut late = hub.subscribe_next_keyframe(now + Duration::from_secs(2), None);
    late.drain_into(now + Duration::from_secs(2), &mut got, usize::MAX);
}

fn packet_fields(bytes: &[u8]) {
    let Some(p) = Packet::new(bytes) else {
        return;
    };
    let _ = (p.pid(), p.pusi(), p.continuity_counter(), p.has_payload());
    let _ = p.random_access();
    let payload = p.payload();
    if let Some(section) = packet::psi_section(payload) {
        let _ = packet::pat_pmt_pid(section);
        let _ = packet::pmt_streams(section);
    }
    if let Some(pts) = packet::pes_pts(payload) {
        let _ = packet::pts_later(pts, pts.wrapping_add(3000), 1500);
    }
    let _ = packet::pes_starts_h264_keyframe(payload);
}

/// Datagrams for an RTP ingest leg, each `[len_hi, len_lo, who, bytes…]`:
/// `who` picks the sender (FFmpeg's port, another local port, a remote
/// host) and the track. Through [`Leg::datagram`], the code `serve` runs on
/// every datagram of an FFmpeg run, into a hub that knows its layer (so SPSs
/// are read), then a joining viewer's snapshot of the cached GOP.
pub fn rtp(mut data: &[u8]) {
    let senders: [SocketAddr; 3] = [
        SocketAddr::from(([127, 0, 0, 1], 40000)),
        SocketAddr::from(([127, 0, 0, 1], 40001)),
        SocketAddr::from(([192, 0, 2, 1], 40000)),
    ];
    let hub = Hub::new(HubConfig::default());
    hub.set_layer_info(LayerInfo {
        width: 1280,
        height: 720,
        fps: 30,
        bitrate_kbps: 2500,
    });
    let counters = RtpCounters::default();
    let mut video = Leg::new(Track::Video, true);
    let mut audio = Leg::new(Track::Audio, false);
    let now = Instant::now();
    let mut i = 0u64;
    while data.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let who = data[2];
        let rest = &data[3..];
        let datagram = &rest[..len.min(rest.len())];
        data = &rest[datagram.len()..];
        if let Ok(p) = rtp_media::RtpPacket::parse(datagram) {
            let _ = p.to_vec();
            let _ = rtp_media::h264_no_picture(p.payload);
            let _ = rtp_media::h264_sps_profile_level_id(p.payload);
            let _ = rtp_media::h264_starts_keyframe(p.payload);
        }
        let from = senders[usize::from(who & 0x7f) % senders.len()];
        let at = now + Duration::from_millis(i);
        i += 1;
        if who & 0x80 == 0 {
            video.datagram(from, datagram, at, &hub, &counters.video);
        } else {
            audio.datagram(from, datagram, at, &hub, &counters.audio);
        }
    }
    let _ = hub.join_rtp(now + Duration::from_millis(i));
    let _ = hub.rtp_gop_cached();
}

/// Annex B bytes through the NAL scanner, the keyframe tests and the
/// survey, every NAL unit's slice header, and SPS units through both SPS
/// readers (profile-level-id; size and rate).
pub fn h264(data: &[u8]) {
    let _ = nal::nal_types(data).count();
    let _ = (nal::is_idr(data), nal::only_parameter_sets(data));
    let _ = nal::is_self_contained_idr(data);
    let mut survey = nal::Survey::default();
    survey.push(data);
    let _ = survey.profile_name();
    for unit in nal::nal_units(data) {
        let _ = nal::slice_header(unit);
        let _ = nal::sps_profile_level_id(unit);
        let _ = sps::sps_info(unit);
    }
    // A bare NAL unit, as RTP carries it.
    let _ = nal::sps_profile_level_id(data);
    let _ = sps::sps_info(data);
    let _ = nal::slice_header(data);
}

/// FFmpeg's output, split into lines: each line to the `-progress` parser
/// and to the run log, then the exit summary; and the masking of
/// credentials that every logged line and URL goes through.
pub fn ffmpeg_output(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut progress = ProgressParser::default();
    let mut log = RunLog::default();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let _ = progress.push_line(line);
        if i % 97 == 96 {
            log.new_run();
        }
        log.push(line);
        let _ = mask(line);
        let _ = endpoint(line.trim());
    }
    let _ = summarize_exit(&log.lines());
    let _ = summarize_exit(&log.current_run());
}

/// `serve`'s config file; for each stream it accepts, what `serve` derives
/// from it: the supervisor policy and FFmpeg's command line.
pub fn serve_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = ServeConfig::parse(Path::new("fuzz.toml"), text) {
        for s in &cfg.streams {
            derived(s);
        }
    }
}

/// A body for `POST /api/v1/streams`: JSON, decoded and validated as the API
/// does, then what a created stream derives from its config.
pub fn stream_json(data: &[u8]) {
    let Ok(value) = api::parse_json(data) else {
        return;
    };
    let Ok(cfg) = api::decode::<StreamConfig>(value) else {
        return;
    };
    if cfg.validate().is_ok() {
        derived(&cfg);
    }
}

fn derived(cfg: &StreamConfig) {
    let _ = crate::restream::policy(cfg);
    let _ = cfg.listening_input();
    let legs = Legs::for_stream(cfg, 40000);
    let _ = crate::ffmpeg::command::ffmpeg_args(cfg, &legs);
}

/// The offer paths of WHEP viewers and WHIP publishers: the checks, and
/// str0m parsing and accepting the offer (a panic in str0m is caught there).
pub struct Sdp {
    whep: RtcFactory,
    whip: crate::whip::answer::Answerer,
}

impl Sdp {
    pub fn new() -> anyhow::Result<Self> {
        let host = vec![SocketAddr::from(([127, 0, 0, 1], 40000))];
        Ok(Self {
            whep: RtcFactory::new(host.clone())?,
            whip: crate::whip::answer::Answerer::new(host)?,
        })
    }

    /// A WHEP viewer's offer for a 3-layer stream of constrained baseline 3.1:
    /// whether it was answered.
    pub fn whep(&self, offer: &str) -> bool {
        self.whep.answer(offer, Instant::now(), 0x42e01f, 3).is_ok()
    }

    /// A WHIP publisher's offer: whether it was answered.
    pub fn whip(&self, offer: &str) -> bool {
        self.whip.answer(offer, Instant::now()).is_ok()
    }
}

/// `serve`'s router ([`crate::http::serve_router`]) with one stream of each
/// kind (FFmpeg; WHIP-published), WHEP and WHIP on loopback, called as a
/// tower service without a socket.
pub struct Http {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    streams: Streams,
    /// The streams it starts with, as they were (requests may change them).
    fixed: Vec<StreamConfig>,
}

/// How long [`Http::request`] waits for an answer before it drops the
/// request (a viewer waiting for a stream to go live is answered only when
/// it does, or after a minute).
pub const ANSWER_WITHIN: Duration = Duration::from_millis(50);

/// The stream tokens and API token [`Http`] is set up with (seeds use them).
pub const HTTP_TOKENS: [&str; 3] = [
    "fuzzviewertoken0000000",
    "fuzzpublishtoken000000",
    "fuzzapitoken0000000000",
];

impl Http {
    /// Refuses unless `PIXELPASS_FFMPEG` names a file that does not exist:
    /// requests may start streams, and no FFmpeg may run from fuzz input.
    pub fn new() -> anyhow::Result<Self> {
        match std::env::var_os("PIXELPASS_FFMPEG") {
            Some(p) if !Path::new(&p).exists() => {}
            _ => anyhow::bail!(
                "set PIXELPASS_FFMPEG to a path that does not exist (no FFmpeg may start)"
            ),
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (app, streams, fixed) = rt.block_on(async {
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let whep = Whep::start(&WebRtcArgs {
                webrtc_udp: loopback,
                ..WebRtcArgs::default()
            })
            .await?;
            let whip = Whip::start(WhipConfig::loopback()).await?;
            let registry = Registry::new();
            let streams = Streams::new(registry.clone(), whep.clone(), Some(whip.clone()));
            let cfg = ServeConfig::parse(
                Path::new("fuzz.toml"),
                &format!(
                    "[[stream]]\nid = \"cam\"\ntoken = \"{}\"\ninput = [\"-f\", \"lavfi\", \"-i\", \"testsrc2\"]\non_demand = true\n\n\
                     [[stream]]\nid = \"pub\"\ntoken = \"pubviewertoken00000000\"\npublish_token = \"{}\"\n",
                    HTTP_TOKENS[0], HTTP_TOKENS[1]
                ),
            )?;
            for s in cfg.streams.clone() {
                streams.create(s)?;
            }
            let app = crate::http::serve_router(
                registry,
                whep,
                Api {
                    streams: streams.clone(),
                    token: HTTP_TOKENS[2].to_owned(),
                },
                whip,
            );
            anyhow::Ok((app, streams, cfg.streams))
        })?;
        Ok(Self {
            rt,
            app,
            streams,
            fixed,
        })
    }

    /// One request, `METHOD TARGET\nName: value\n…\n\nbody` (what the
    /// server would have read off a socket; lines that hyper would refuse
    /// are skipped): its status, once its body ended or stalled (`None`: no
    /// answer within [`ANSWER_WITHIN`], or not a request). Then the
    /// streams are put back as they were (created ones deleted, changed or
    /// deleted ones made again), so state stays bounded and inputs repeatable.
    pub fn request(&self, data: &[u8]) -> Option<StatusCode> {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let mut lines = head.split(|&b| b == b'\n');
        let first = lines.next()?;
        let mut words = first.splitn(2, |&b| b == b' ');
        let method = Method::from_bytes(words.next()?).ok()?;
        let uri = Uri::try_from(words.next()?).ok()?;
        let mut req = Request::builder().method(method).uri(uri);
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) else {
                continue;
            };
            req = req.header(name, value);
        }
        let req = req.body(Body::from(Bytes::copy_from_slice(body))).ok()?;
        let status = self.rt.block_on(async {
            // A viewer of a stream that is not live waits for it (up to a
            // minute: `lease.ready`); such a request is dropped after
            // ANSWER_WITHIN, as a client giving up would (which frees its slot).
            let resp = tokio::time::timeout(ANSWER_WITHIN, self.app.clone().oneshot(req))
                .await
                .ok()?
                .ok()?;
            let status = resp.status();
            // A live stream's body never ends: read what is there, then drop it.
            let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).now_or_never();
            Some(status)
        });
        self.rt.block_on(async {
            for id in self.streams.ids() {
                let keep = self
                    .streams
                    .get(&id)
                    .is_some_and(|v| self.fixed.contains(&v.config));
                if !keep {
                    let _ = self.streams.delete(&id).await;
                }
            }
            for f in &self.fixed {
                if self.streams.get(&f.id).is_none() {
                    let _ = self.streams.create(f.clone());
                }
            }
        });
        status
    }
}
