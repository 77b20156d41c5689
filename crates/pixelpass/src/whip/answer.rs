//! A publisher's `Rtc` from its WHIP offer: ice-lite, RTP mode, receiving
//! H.264 of any common profile (the answer keeps the publisher's: OBS
//! offers High, browsers constrained baseline) and Opus, in whatever order
//! and with whatever payload types the offer uses.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::rtp::Extension;
use str0m::Rtc;

use crate::net::rtc::{add_opus, negotiated_pt, parse_offer, sdp, Identity};

/// H.264 profiles a publisher may send (any level): constrained baseline,
/// baseline, main, constrained high, high.
const H264_PROFILES: [u32; 5] = [0x42e01f, 0x42001f, 0x4d001f, 0x640c1f, 0x64001f];

/// Why an offer gets no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// `400`: not SDP, or SDP str0m refuses.
    Malformed(String),
    /// `422`: well-formed, but no codec in common.
    Unacceptable(String),
}

/// What was agreed with the publisher.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub video_mid: Mid,
    pub video_pt: Pt,
    /// The publisher's H.264 profile-level-id (viewers are answered with it).
    pub h264_profile: u32,
    pub audio: Option<(Mid, Pt)>,
    /// For the API: `H264 profile-level-id=640c1f`, `opus/48000/2`.
    pub codecs: Vec<String>,
}

pub struct Answerer {
    id: Identity,
}

impl Answerer {
    pub fn new(candidates: Vec<SocketAddr>) -> anyhow::Result<Self> {
        Ok(Self {
            id: Identity::new(candidates)?,
        })
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        self.id.candidates()
    }

    fn config(&self) -> str0m::RtcConfig {
        let mut cfg = self
            .id
            .config()
            .clear_extension_map()
            .set_extension(4, Extension::RtpMid)
            .set_extension(10, Extension::RtpStreamId)
            .set_extension(11, Extension::RepairedRtpStreamId);
        // Our payload type numbers do not matter: the answer uses the offer's.
        for (i, profile) in H264_PROFILES.iter().enumerate() {
            let pt = 96 + 2 * i as u8;
            cfg.codec_config()
                .add_h264(pt.into(), Some((pt + 1).into()), true, *profile);
        }
        add_opus(&mut cfg);
        cfg
    }

    /// A new `Rtc` that accepted `offer_sdp`, the SDP answer and what was agreed.
    pub fn answer(
        &self,
        offer_sdp: &str,
        now: Instant,
    ) -> Result<(Rtc, String, Negotiated), OfferError> {
        let offer = parse_offer(offer_sdp).map_err(OfferError::Malformed)?;
        sdp::check(offer_sdp).map_err(OfferError::Unacceptable)?;
        let (rtc, answer) = self
            .id
            .accept(self.config(), offer, now)
            .map_err(OfferError::Malformed)?;
        let neg = negotiated(&rtc, &answer).ok_or_else(|| {
            OfferError::Unacceptable(
                "the offer has no H.264 this relay takes (packetization-mode=1; profiles constrained baseline, baseline, main or high)".into(),
            )
        })?;
        Ok((rtc, answer, neg))
    }
}

/// Read the agreed codecs off the answer and the `Rtc`.
fn negotiated(rtc: &Rtc, answer: &str) -> Option<Negotiated> {
    let sections = sdp::sections(answer);
    let mid_of = |kind: &str, codec: Codec| {
        sections
            .iter()
            .filter(|s| s.kind == kind && !s.rejected)
            .filter_map(|s| s.mid.as_deref())
            .find_map(|mid| {
                let mid = Mid::from(mid);
                negotiated_pt(rtc, mid, codec).map(|pt| (mid, pt))
            })
    };
    let (video_mid, video_pt) = mid_of("video", Codec::H264)?;
    let h264_profile = rtc
        .codec_config()
        .iter()
        .find(|p| p.pt() == video_pt)
        .and_then(|p| p.spec().format.profile_level_id)?;
    let audio = mid_of("audio", Codec::Opus);
    let mut codecs = vec![format!("H264 profile-level-id={h264_profile:06x}")];
    if audio.is_some() {
        codecs.push("opus/48000/2".into());
    }
    Some(Negotiated {
        video_mid,
        video_pt,
        h264_profile,
        audio,
        codecs,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use super::{Answerer, OfferError};

    /// An offer the `sdp` fuzz target made (a Chromium offer, mangled) on
    /// which str0m 0.25 asserts ("Pt locked multiple times",
    /// `format/payload_params.rs`) inside `accept_offer`.
    const PT_CLAIMED_TWICE: &str =
        include_str!("../../../../fuzz/corpus/sdp/str0m_pt_claimed_twice.sdp");

    #[test]
    fn an_offer_str0m_panics_on_is_refused_not_a_crash() {
        let host = vec![SocketAddr::from(([127, 0, 0, 1], 40000))];
        let r = Answerer::new(host)
            .unwrap()
            .answer(PT_CLAIMED_TWICE, Instant::now());
        assert!(
            matches!(&r, Err(OfferError::Malformed(m)) if m.contains("could not be negotiated")),
            "str0m's panic, caught, is a 400"
        );
    }
}
