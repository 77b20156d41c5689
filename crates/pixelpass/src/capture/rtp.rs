//! The WebRTC branch: the SAME encoded H.264 packetized once as RTP, and the
//! raw audio encoded once more as Opus (browsers take no AAC over WebRTC),
//! both published to the hub's RTP tracks straight from the appsink callback
//! (`Hub::publish_rtp` only parses a header and sends on a broadcast ring).
//!
//! ```text
//! video_encoded ─► tee ─► queue(video-mux-queue) ─► mpegtsmux …                (TS, as before)
//!                      └► queue(leaky) ─► rtph264pay(pt, mtu 1200; SPS/PPS in-band from h264parse) ─► appsink
//! audio_raw     ─► tee ─► queue ─► AAC …                                        (TS, as before)
//!                      └► queue(leaky) ─► audioconvert ─► opusenc ─► rtpopuspay(pt) ─► appsink
//! ```

use std::time::Instant;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::element::{build, builder, link_chain, make, set_num, set_str, soft};
use super::error::PipelineError;
use crate::hub::{Hub, Track};

/// WebRTC's safe RTP size (what the hub's packets are cut to).
pub const MTU: u32 = 1200;
/// Opus bitrate (stereo, 48 kHz).
pub const OPUS_BITRATE: u64 = 96_000;
/// Elements the branch needs.
pub const ELEMENTS: &[&str] = &[
    "tee",
    "queue",
    "rtph264pay",
    "audioconvert",
    "opusenc",
    "rtpopuspay",
    "appsink",
];

/// Payload types the producer writes (the WHEP side rewrites them per peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpOutput {
    pub video_pt: u8,
    pub audio_pt: u8,
}

impl Default for RtpOutput {
    fn default() -> Self {
        Self {
            video_pt: 102,
            audio_pt: 111,
        }
    }
}

/// The branch's appsinks.
pub(crate) struct RtpSinks {
    /// One per layer, 0 first.
    pub video: Vec<gst_app::AppSink>,
    pub audio: Option<gst_app::AppSink>,
}

/// One RTP timestamp offset for every layer's payloader of a run: with the
/// same clock (the pipeline's running time), the layers' RTP timestamps
/// are then directly comparable (a WebRTC viewer switching layers keeps
/// its timeline). Random per run, as RFC 3550 asks.
pub(crate) fn shared_timestamp_offset() -> u32 {
    // u32::MAX is the payloader's "pick a random one of your own".
    getrandom::u32().unwrap_or(0x5eed_0001).min(u32::MAX - 1)
}

/// Tee `video` (a layer's encoded H.264) into an RTP payloader and appsink;
/// the TS branch then links from the returned tee. `sfx` names the layer.
pub(crate) fn link_video(
    pipeline: &gst::Pipeline,
    video: &gst::Element,
    out: RtpOutput,
    sfx: &str,
    timestamp_offset: u32,
) -> Result<(gst::Element, gst_app::AppSink), PipelineError> {
    let vtee = make("tee", &format!("video-tee{sfx}"))?;
    let pay = make("rtph264pay", &format!("rtph264pay{sfx}"))?;
    set_num(&pay, "pt", u64::from(out.video_pt))?;
    set_num(&pay, "mtu", u64::from(MTU))?;
    set_num(&pay, "timestamp-offset", u64::from(timestamp_offset))?;
    // The stream already carries SPS/PPS before every IDR (h264parse,
    // config-interval=-1). The payloader's own -1 would insert them again
    // before EACH IDR slice: with x264's sliced threads that put an SPS
    // between two slices of one picture, which by H.264 7.4.1.2.3 starts a
    // new access unit, and a strict decoder (h264parse + avdec_h264) then
    // decodes half a keyframe and conceals the rest until the next one.
    set_str(&pay, "config-interval", "0")?;
    soft(set_str(&pay, "aggregate-mode", "zero-latency"));
    let vsink = appsink(&format!("rtp-video-sink{sfx}"))?;
    let vchain = [
        vtee.clone(),
        branch_queue(&format!("rtp-video-queue{sfx}"))?,
        pay,
        vsink.clone(),
    ];
    add(pipeline, &vchain)?;
    link_chain(&[video, &vtee])?;
    link_chain(&vchain.iter().collect::<Vec<_>>())?;
    Ok((vtee, downcast(vsink)?))
}

/// Tee `raw` (48 kHz stereo) into Opus → RTP → appsink; the TS side's AAC
/// then links from the returned queue.
pub(crate) fn link_audio(
    pipeline: &gst::Pipeline,
    raw: &gst::Element,
    out: RtpOutput,
) -> Result<(gst::Element, gst_app::AppSink), PipelineError> {
    let atee = make("tee", "audio-tee")?;
    // The TS side of the audio tee gets its own queue: each tee branch needs one.
    let ts_queue = make("queue", "audio-ts-queue")?;
    let enc = make("opusenc", "opusenc")?;
    soft(set_num(&enc, "bitrate", OPUS_BITRATE));
    let pay = make("rtpopuspay", "rtpopuspay")?;
    set_num(&pay, "pt", u64::from(out.audio_pt))?;
    set_num(&pay, "mtu", u64::from(MTU))?;
    let asink = appsink("rtp-audio-sink")?;
    // The tee carries the AAC encoder's sample format: convert for Opus.
    let conv = make("audioconvert", "opus-audioconvert")?;
    let achain = [
        atee.clone(),
        branch_queue("rtp-audio-queue")?,
        conv,
        enc,
        pay,
        asink.clone(),
    ];
    add(pipeline, &achain)?;
    add(pipeline, std::slice::from_ref(&ts_queue))?;
    link_chain(&[raw, &atee])?;
    link_chain(&achain.iter().collect::<Vec<_>>())?;
    link_chain(&[&atee, &ts_queue])?;
    Ok((ts_queue, downcast(asink)?))
}

/// Publish what reaches the appsinks to the hub. Runs on GStreamer's
/// streaming threads: `publish_rtp` never waits.
/// Layer `i`'s video goes to `hub.layer(i)`; audio to layer 0 only.
pub(crate) fn attach(sinks: &RtpSinks, hub: &Hub) {
    for (i, video) in sinks.video.iter().enumerate() {
        if let Some(layer) = hub.layer(i) {
            attach_one(video, layer, Track::Video);
        }
    }
    if let Some(a) = &sinks.audio {
        attach_one(a, hub.clone(), Track::Audio);
    }
}

/// Stop publishing (call with the pipeline stopped).
pub(crate) fn detach(sinks: &RtpSinks) {
    for video in &sinks.video {
        video.set_callbacks(gst_app::AppSinkCallbacks::builder().build());
    }
    if let Some(a) = &sinks.audio {
        a.set_callbacks(gst_app::AppSinkCallbacks::builder().build());
    }
}

fn attach_one(sink: &gst_app::AppSink, hub: Hub, track: Track) {
    let callbacks = gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = super::appsink::pull(sink)?;
            let now = Instant::now();
            let mut publish = |buffer: &gst::BufferRef| {
                if let Ok(map) = buffer.map_readable() {
                    if let Err(e) = hub.publish_rtp(track, &map, now) {
                        tracing::debug!(?track, "RTP packet not published: {e}");
                    }
                }
            };
            if let Some(list) = sample.buffer_list() {
                list.iter().for_each(&mut publish);
            } else if let Some(buffer) = sample.buffer() {
                publish(buffer);
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .build();
    sink.set_callbacks(callbacks);
}

/// A queue that drops rather than holds the encoder back.
fn branch_queue(name: &str) -> Result<gst::Element, PipelineError> {
    build(
        builder("queue", name)?
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", 200u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64),
        "queue",
    )
}

fn appsink(name: &str) -> Result<gst::Element, PipelineError> {
    build(
        builder("appsink", name)?
            .property("sync", false)
            .property("async", false)
            .property("max-buffers", 256u32)
            .property("drop", true)
            .property("enable-last-sample", false)
            .property("emit-signals", false),
        "appsink",
    )
}

fn downcast(el: gst::Element) -> Result<gst_app::AppSink, PipelineError> {
    el.downcast::<gst_app::AppSink>()
        .map_err(|_| PipelineError::Create {
            element: "appsink".into(),
            message: "the appsink element is not a GstAppSink".into(),
        })
}

fn add(pipeline: &gst::Pipeline, els: &[gst::Element]) -> Result<(), PipelineError> {
    for el in els {
        pipeline.add(el).map_err(|e| PipelineError::Create {
            element: el.name().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::broadcast::error::RecvError;

    use super::super::{GstProducer, PipelineConfig};
    use super::*;
    use crate::capture::source::SourceKind;
    use crate::hub::{HubConfig, RtpPkt};

    /// NAL unit types in an RTP/H.264 payload (single NAL or STAP-A).
    fn nal_types(p: &[u8]) -> Vec<u8> {
        if p[0] & 0x1f != 24 {
            return vec![p[0] & 0x1f];
        }
        let (mut i, mut v) = (1, Vec::new());
        while i + 2 < p.len() {
            let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
            v.push(p[i + 2] & 0x1f);
            i += 2 + size;
        }
        v
    }

    /// NAL units that START in a payload: single, STAP-A, or the first FU-A fragment.
    fn nal_starts(p: &[u8]) -> Vec<u8> {
        match p[0] & 0x1f {
            28 if p[1] & 0x80 != 0 => vec![p[1] & 0x1f],
            28 => vec![],
            _ => nal_types(p),
        }
    }

    async fn next(
        rx: &mut tokio::sync::broadcast::Receiver<RtpPkt>,
        want: impl Fn(&RtpPkt) -> bool,
    ) -> RtpPkt {
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(p) if want(&p) => return p,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => panic!("hub closed"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the packet comes")
    }

    #[tokio::test]
    async fn the_same_encoder_feeds_rtp_h264_with_sps_at_keyframes_and_opus() {
        super::super::init().expect("GStreamer initialises");
        let choice = super::super::encoder::choose().expect("an H.264 encoder");
        let cfg = PipelineConfig {
            source: SourceKind::Test,
            framerate: 30,
            bitrate_kbps: 500,
            width: Some(320),
            height: Some(240),
            ..PipelineConfig::default()
        };
        let out = RtpOutput {
            video_pt: 96,
            audio_pt: 97,
        };
        let producer = GstProducer::new(cfg, choice).with_rtp(out).unwrap();
        let hub = Hub::new(HubConfig::default());
        let mut sub = hub.subscribe_rtp(Instant::now());
        let (run, _probe) =
            tokio::time::timeout(Duration::from_secs(15), producer.start_run(hub.clone()))
                .await
                .expect("starts in time")
                .expect("starts");
        let key = next(&mut sub.video, |p| p.key).await;
        assert_eq!(key.payload_type, 96);
        assert!(key.payload.len() <= MTU as usize);
        // The keyframe starts with its SPS (and PPS): alone, or in a STAP-A.
        let nals = nal_types(&key.payload);
        assert!(nals.contains(&7), "SPS at the keyframe: {nals:?}");
        // …and only there: no SPS/PPS between the slices of the keyframe (an
        // SPS after a slice starts a new access unit for a strict decoder).
        let mut au = vec![key.clone()];
        while !au.last().expect("a packet").marker {
            au.push(next(&mut sub.video, |_| true).await);
        }
        assert!(
            au.iter().all(|p| p.timestamp == key.timestamp),
            "one access unit"
        );
        let types: Vec<u8> = au.iter().flat_map(|p| nal_starts(&p.payload)).collect();
        let first_slice = types.iter().position(|&t| t == 5).expect("an IDR slice");
        assert!(
            !types[first_slice..].iter().any(|&t| t == 7 || t == 8),
            "SPS/PPS between the IDR slices: {types:?}"
        );
        // A forced keyframe comes on request (the hub's source is the encoder).
        hub.request_keyframe(Instant::now() + Duration::from_secs(1));
        let audio = next(&mut sub.audio, |_| true).await;
        assert_eq!(audio.payload_type, 97);
        tokio::time::timeout(Duration::from_secs(5), run.handle.stop())
            .await
            .expect("stops");
    }
}
