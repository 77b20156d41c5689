//! What WebRTC viewers (WHEP) and publishers (WHIP) negotiate alike: the
//! DTLS identity, reading an untrusted offer, the payload type str0m agreed
//! on, and [`sdp`], a first look at an offer for one-line `422` reasons.

pub(crate) mod sdp;

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Mid, Pt};
use str0m::{Candidate, Rtc, RtcConfig};

/// What every answer of one service (WHEP viewers, WHIP publishers) says
/// about us: the crypto provider and DTLS certificate all its peers share,
/// and its host candidates.
#[derive(Clone)]
pub(crate) struct Identity {
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    candidates: Vec<SocketAddr>,
}

impl Identity {
    pub fn new(candidates: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| anyhow::anyhow!("the crypto provider cannot make a DTLS certificate"))?;
        Ok(Self {
            crypto,
            cert,
            candidates,
        })
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// A config with this identity, ice-lite, in RTP mode, with no codecs yet.
    pub fn config(&self) -> RtcConfig {
        RtcConfig::new()
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
    }

    /// Build an `Rtc` from `cfg` with our host candidates and accept `offer`:
    /// the `Rtc` and the SDP answer, or why not (one line, for a `400`). A
    /// panic in str0m on untrusted input is a refused offer, not a dead server.
    pub fn accept(
        &self,
        cfg: RtcConfig,
        offer: SdpOffer,
        now: Instant,
    ) -> Result<(Rtc, String), String> {
        catch_unwind(AssertUnwindSafe(|| {
            let mut rtc = cfg.build(now);
            for addr in &self.candidates {
                let c = Candidate::host(*addr, "udp")
                    .map_err(|e| format!("bad local candidate {addr}: {e}"))?;
                rtc.add_local_candidate(c);
            }
            let answer = rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| format!("the offer was refused: {e}"))?;
            Ok((rtc, answer.to_sdp_string()))
        }))
        .unwrap_or_else(|_| Err("the offer could not be negotiated".into()))
    }
}

/// One output of a peer's `Rtc` ([`poll`]). A value returned and matched at
/// once, never stored: boxing the large event would cost an allocation per
/// received RTP packet on the WHIP path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Polled {
    Transmit(str0m::net::Transmit),
    Event(str0m::Event),
    /// Nothing more until this time (or the next input).
    Timeout(Instant),
    /// str0m failed or panicked on this peer: it is done for.
    Failed(String),
}

/// A datagram a socket received from `source`, sent to our `destination`,
/// as a peer's input at `now`; `None` when it is not STUN, DTLS, RTP or RTCP.
pub(crate) fn receive<'a>(
    now: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    contents: &'a [u8],
) -> Option<str0m::Input<'a>> {
    let recv =
        str0m::net::Receive::new(str0m::net::Protocol::Udp, source, destination, contents).ok()?;
    Some(str0m::Input::Receive(now, recv))
}

/// The ICE ufrag a STUN request is addressed to: the part before `:` of its
/// USERNAME (RFC 8445 §7.2.2: "receiver's ufrag:sender's ufrag"); `None` for
/// anything that is not a STUN message with a USERNAME.
pub(crate) fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    if datagram.len() < 20 || datagram[0] > 3 || datagram[4..8] != MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = datagram.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let n = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + n)?;
        if kind == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        at += 4 + n.div_ceil(4) * 4;
    }
    None
}

/// The next output of `rtc`; a str0m error or panic becomes [`Polled::Failed`]
/// (one peer's bad state never takes the engine down).
pub(crate) fn poll(rtc: &mut Rtc) -> Polled {
    match catch_unwind(AssertUnwindSafe(|| rtc.poll_output())) {
        Ok(Ok(str0m::Output::Transmit(t))) => Polled::Transmit(t),
        Ok(Ok(str0m::Output::Event(e))) => Polled::Event(e),
        Ok(Ok(str0m::Output::Timeout(t))) => Polled::Timeout(t),
        Ok(Err(e)) => Polled::Failed(format!("WebRTC error: {e}")),
        Err(_) => Polled::Failed("str0m panicked while polling this peer".into()),
    }
}

/// Feed `rtc` one input; why not, when str0m refuses it or panics on it.
pub(crate) fn feed(rtc: &mut Rtc, input: str0m::Input<'_>) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| rtc.handle_input(input))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("WebRTC error: {e}")),
        Err(_) => Err("str0m panicked on this peer's input".into()),
    }
}

/// Close `rtc` (RTCP BYE, DTLS close_notify queued) if it is alive;
/// whether there is a goodbye to drain.
pub(crate) fn close(rtc: &mut Rtc) -> bool {
    rtc.is_alive() && catch_unwind(AssertUnwindSafe(|| rtc.close())).is_ok_and(|r| r.is_ok())
}

/// Opus as every peer of ours carries it: 48 kHz stereo, 10 ms minimum
/// packet time, in-band FEC (the payload type is the offer's in an answer).
pub(crate) fn add_opus(cfg: &mut RtcConfig) {
    cfg.codec_config().add_config(
        111.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            stereo: Some(true),
            sprop_stereo: Some(true),
            ..FormatParams::default()
        },
    );
}

/// Parse an untrusted offer: a panic in the parser is a bad offer, not a
/// dead server. The error is one line for a `400` body.
pub(crate) fn parse_offer(sdp: &str) -> Result<SdpOffer, String> {
    catch_unwind(|| SdpOffer::from_sdp_string(sdp))
        .unwrap_or_else(|_| Err(str0m::error::SdpError::ParseError("str0m panicked".into())))
        .map_err(|e| format!("the offer is not valid SDP: {}", one_line(&e.to_string())))
}

/// The payload type the peer negotiated for `codec` on `mid`, if any.
pub(crate) fn negotiated_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let remote = media.remote_pts();
    rtc.codec_config()
        .iter()
        .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))
        .map(|p| p.pt())
}

/// A parser's multi-line message as one line (status bodies are one line).
pub(crate) fn one_line(msg: &str) -> String {
    let joined = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    // The parser quotes a pointer address that says nothing to the sender.
    let cleaned = match (joined.find(" at PointerOffset("), joined.find(')')) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &joined[..a], &joined[b + 1..]),
        _ => joined,
    };
    cleaned.chars().take(200).collect()
}

#[cfg(test)]
mod one_line_tests {
    #[test]
    fn parser_messages_become_one_short_line() {
        let m = super::one_line("SDP parse: Parse error at PointerOffset(0x7f86)\nUnexpected `g`\nExpected `v`\nsdp line\n");
        assert_eq!(
            m,
            "SDP parse: Parse error Unexpected `g` Expected `v` sdp line"
        );
    }
}

#[cfg(test)]
mod stun_tests {
    use super::stun_local_ufrag;

    #[test]
    fn the_ufrag_a_stun_request_is_for() {
        // A binding request: header, then USERNAME "srv1:cli2" (9 bytes, padded).
        let mut m = vec![0x00, 0x01, 0x00, 16, 0x21, 0x12, 0xa4, 0x42];
        m.extend([7u8; 12]); // transaction id
        m.extend([0x00, 0x06, 0x00, 9]);
        m.extend(b"srv1:cli2\0\0\0");
        assert_eq!(stun_local_ufrag(&m), Some("srv1"));
        // Cut short, not STUN (RTP, DTLS), no USERNAME: none.
        assert_eq!(stun_local_ufrag(&m[..30]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        assert_eq!(stun_local_ufrag(&[22; 40]), None);
        let mut bare = m[..20].to_vec();
        bare[3] = 0;
        assert_eq!(stun_local_ufrag(&bare), None);
    }
}
