//! The client-side decoder of `bench latency`: H.264 access units in,
//! decoded frames out, each with the time code read from it and the wall
//! clock at the moment it was decoded.
//!
//! ```text
//! appsrc(byte-stream, au; live) ─► h264parse ─► avdec_h264(slice threads) ─► appsink(sync=false)
//! ```
//!
//! In-process, with the access unit handed over the moment its last byte
//! arrived: no pipe, no probing of the stream (an `ffmpeg -i pipe:0` child
//! first probes the input and, with its default frame threads, holds frames
//! back by one per thread). `avdec_h264` is libav's decoder; with slice
//! threads it returns each frame from the call that decoded it.

use std::sync::mpsc::Sender;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use pixelpass::capture::element::{build, builder, link_chain, set_str, soft};
use pixelpass::capture::PipelineError;
use pixelpass::media::timecode::{self as code, ReadError};

/// Elements the decoder needs.
pub const ELEMENTS: &[&str] = &["appsrc", "h264parse", "avdec_h264", "appsink"];

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When the decoder handed it out.
    pub at: Instant,
    /// The same moment on the wall clock, ms since the Unix epoch.
    pub wall_ms: f64,
    /// The time code drawn into it (ms since the Unix epoch).
    pub code: Result<u64, ReadError>,
}

impl Frame {
    /// Decode time minus drawn time, ms.
    pub fn latency_ms(&self) -> Option<f64> {
        self.code
            .as_ref()
            .ok()
            .map(|&drawn| self.wall_ms - drawn as f64)
    }
}

/// Wall clock now, ms since the Unix epoch (sub-millisecond).
pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub struct Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
}

impl Decoder {
    /// A running decoder; every decoded frame goes to `frames`.
    pub fn start(frames: Sender<Frame>) -> Result<Self, PipelineError> {
        pixelpass::capture::init()?;
        pixelpass::capture::check_elements(ELEMENTS.iter().copied())?;
        let pipeline = gst::Pipeline::with_name("latency-decoder");
        let caps = gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build();
        let src = build(
            builder("appsrc", "au-src")?
                .property("caps", &caps)
                .property("is-live", true)
                .property("do-timestamp", true)
                .property("format", gst::Format::Time),
            "appsrc",
        )?;
        let parse = build(builder("h264parse", "client-h264parse")?, "h264parse")?;
        let dec = build(builder("avdec_h264", "avdec_h264")?, "avdec_h264")?;
        soft(set_str(&dec, "thread-type", "slice"));
        let sink = build(
            builder("appsink", "frames")?
                .property("sync", false)
                .property("enable-last-sample", false)
                .property("max-buffers", 8u32),
            "appsink",
        )?;
        let els = [src.clone(), parse, dec, sink.clone()];
        for el in &els {
            pipeline.add(el).map_err(|e| PipelineError::Create {
                element: el.name().to_string(),
                message: e.to_string(),
            })?;
        }
        link_chain(&els.iter().collect::<Vec<_>>())?;
        let sink = sink
            .downcast::<gst_app::AppSink>()
            .map_err(|_| not_app("appsink"))?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let (at, wall_ms) = (Instant::now(), wall_ms());
                    let code = read_sample(&sample);
                    // The receiver gone: the benchmark is over.
                    frames
                        .send(Frame { at, wall_ms, code })
                        .map_err(|_| gst::FlowError::Eos)?;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let src = src
            .downcast::<gst_app::AppSrc>()
            .map_err(|_| not_app("appsrc"))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| PipelineError::StateChange {
                state: "PLAYING".into(),
                message: e.to_string(),
            })?;
        Ok(Self { pipeline, src })
    }

    /// One whole access unit (Annex-B).
    pub fn push(&self, au: Vec<u8>) -> Result<(), String> {
        self.src
            .push_buffer(gst::Buffer::from_mut_slice(au))
            .map(|_| ())
            .map_err(|e| format!("decoder: {e:?}"))
    }

    /// The first ERROR the decoder posted, if any.
    pub fn error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                let from = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                return Some(format!("{from}: {}", e.error()));
            }
        }
        None
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn not_app(element: &str) -> PipelineError {
    PipelineError::Create {
        element: element.into(),
        message: "not the app element".into(),
    }
}

/// The time code of a decoded sample (its luma plane).
pub fn read_sample(sample: &gst::Sample) -> Result<u64, ReadError> {
    let small = || {
        ReadError::Code(code::CodeError::TooSmall {
            width: 0,
            height: 0,
        })
    };
    let info = sample
        .caps()
        .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
        .ok_or_else(small)?;
    let buffer = sample.buffer().ok_or_else(small)?;
    let frame =
        gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|_| small())?;
    if !info.format_info().is_yuv() {
        return Err(small());
    }
    let stride = frame.plane_stride()[0] as usize;
    let luma = frame.plane_data(0).map_err(|_| small())?;
    code::read(luma, stride, info.width() as usize, info.height() as usize)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use pixelpass::capture::encoder::{make_encoder, EncoderChoice, EncoderKind, EncoderSettings};

    const W: usize = 1280;
    const H: usize = 720;
    /// The host's default bitrate (kbit/s).
    const KBPS: u32 = 4000;

    /// An I420 frame: a moving gradient with noise (work for the encoder), the code on top.
    fn frame(n: usize, ms: u64) -> Vec<u8> {
        let mut state = (n as u32).wrapping_mul(2_654_435_761) | 1;
        let mut f: Vec<u8> = (0..W * H)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (((i % W) * 2 + (i / W) + n * 8) % 256) as u8 ^ (state as u8 & 0x3f)
            })
            .collect();
        f.extend((0..W * H / 2).map(|i| (i * 7 + n) as u8));
        let (y, uv) = f.split_at_mut(W * H);
        code::render(y, W, W, H, ms).unwrap();
        let (u, v) = uv.split_at_mut(W * H / 4);
        code::neutral_chroma(u, W / 2, 2, 2).unwrap();
        code::neutral_chroma(v, W / 2, 2, 2).unwrap();
        f
    }

    fn times() -> Vec<u64> {
        vec![
            0,
            1,
            (1 << 47) - 1,
            code::MAX,
            code::now_ms(),
            1 << 47,
            0x5555_5555_5555,
        ]
    }

    /// Push raw I420 frames through `middle` (elements between appsrc and
    /// appsink) and return the samples that come out.
    fn through(middle: Vec<gst::Element>, frames: &[Vec<u8>]) -> Vec<gst::Sample> {
        pixelpass::capture::init().unwrap();
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", W as i32)
            .field("height", H as i32)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .build();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let mut all: Vec<gst::Element> = vec![src.clone().upcast()];
        all.extend(middle);
        all.push(sink.clone().upcast());
        pipeline.add_many(&all).unwrap();
        gst::Element::link_many(&all).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        for (i, f) in frames.iter().enumerate() {
            let mut b = gst::Buffer::from_mut_slice(f.clone());
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(33 * i as u64));
            src.push_buffer(b).unwrap();
        }
        src.end_of_stream().unwrap();
        let mut out = Vec::new();
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(20)) {
            out.push(s);
        }
        pipeline.set_state(gst::State::Null).unwrap();
        out
    }

    #[test]
    fn the_code_survives_x264_at_the_default_bitrate_and_our_decoder() {
        let times = times();
        let frames: Vec<Vec<u8>> = (0..30).map(|n| frame(n, times[n % times.len()])).collect();
        pixelpass::capture::init().unwrap();
        let settings = EncoderSettings {
            bitrate_kbps: KBPS,
            framerate: 30,
            screen: false,
        };
        let enc = make_encoder(EncoderChoice::new(EncoderKind::X264), settings).expect("x264enc");
        let caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            )
            .build()
            .unwrap();
        let parse = gst::ElementFactory::make("h264parse").build().unwrap();
        let aus = through(vec![enc, parse, caps], &frames);
        assert_eq!(aus.len(), frames.len(), "one access unit per frame");

        let (tx, rx) = mpsc::channel();
        let dec = Decoder::start(tx).expect("the decoder starts");
        for s in &aus {
            let map = s.buffer().unwrap().map_readable().unwrap();
            dec.push(map.as_slice().to_vec()).unwrap();
        }
        let got: Vec<Frame> = (0..frames.len())
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("a decoded frame")
            })
            .collect();
        assert_eq!(dec.error(), None);
        for (n, f) in got.iter().enumerate() {
            assert_eq!(f.code, Ok(times[n % times.len()]), "frame {n}");
        }
    }

    #[test]
    fn the_code_survives_jpeg_at_low_quality() {
        pixelpass::capture::init().unwrap();
        let times = times();
        let frames: Vec<Vec<u8>> = times
            .iter()
            .enumerate()
            .map(|(n, &t)| frame(n, t))
            .collect();
        let enc = gst::ElementFactory::make("jpegenc")
            .property("quality", 20i32)
            .build()
            .expect("jpegenc");
        let dec = gst::ElementFactory::make("jpegdec")
            .build()
            .expect("jpegdec");
        let out = through(vec![enc, dec], &frames);
        assert_eq!(out.len(), frames.len());
        for (s, &t) in out.iter().zip(&times) {
            assert_eq!(read_sample(s), Ok(t));
        }
    }

    /// The clock source (in the library) draws what this reader reads.
    #[test]
    fn every_frame_carries_the_time_it_was_produced() {
        pixelpass::capture::init().unwrap();
        let chain =
            pixelpass::capture::source::clock::video(pixelpass::capture::source::VideoParams {
                framerate: 30,
                width: None,
                height: None,
            })
            .unwrap();
        let pipeline = gst::Pipeline::new();
        let sink = gst_app::AppSink::builder().sync(false).build();
        pipeline.add_many(&chain).unwrap();
        pipeline.add(&sink).unwrap();
        gst::Element::link_many([&chain[0], &chain[1], sink.upcast_ref()]).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut codes = Vec::new();
        for _ in 0..10 {
            let before = code::now_ms();
            let s = sink
                .try_pull_sample(gst::ClockTime::from_seconds(5))
                .expect("a frame");
            let after = code::now_ms();
            let drawn = read_sample(&s).expect("the code reads");
            // Drawn when produced: no later than we got it, and recently.
            assert!(
                drawn <= after && drawn + 1000 >= before,
                "drawn {drawn}, pulled between {before} and {after}"
            );
            codes.push(drawn);
        }
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(
            codes.windows(2).all(|w| w[0] <= w[1]),
            "times only go forward: {codes:?}"
        );
        let span = codes[9] - codes[0];
        assert!(
            Duration::from_millis(span) >= Duration::from_millis(200),
            "30 frames/s: {codes:?}"
        );
    }
}
