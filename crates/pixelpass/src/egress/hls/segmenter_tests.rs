use super::*;

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

fn au(dts: u64, key: bool) -> EsUnit {
    let mut data = Vec::new();
    if key {
        for nal in [SPS, PPS, &[0x65, 0x88, 0x84][..]] {
            data.extend_from_slice(&[0, 0, 0, 1]);
            data.extend_from_slice(nal);
        }
    } else {
        data.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x9a, 0x02]);
    }
    EsUnit {
        kind: EsKind::H264,
        pts: dts % WRAP,
        dts: dts % WRAP,
        random_access: key,
        data,
    }
}

fn aac(pts: u64) -> EsUnit {
    // One ADTS frame: AAC-LC, 48 kHz, stereo, 3 payload bytes.
    let data = vec![0xff, 0xf1, 0x4c, 0x80, 0x01, 0x5f, 0xfc, 1, 2, 3];
    EsUnit {
        kind: EsKind::Aac,
        pts: pts % WRAP,
        dts: pts % WRAP,
        random_access: false,
        data,
    }
}

/// What a run of outputs says: (parts, each part's frames and ms; segments' first wall_ms).
#[derive(Default, Debug)]
struct Seen {
    inits: usize,
    parts: Vec<(usize, f64)>,
    segments: Vec<u64>,
    segment_parts: Vec<usize>,
    key_requests: usize,
    closed_parts: usize,
    rebased: Option<f64>,
}

fn tally(out: &[Output]) -> Seen {
    let mut s = Seen::default();
    for o in out {
        match o {
            Output::Init(b) => {
                assert_eq!(&b[4..8], b"ftyp");
                s.inits += 1;
            }
            Output::Chunk {
                bytes,
                part,
                segment,
                key,
                wall_ms,
                duration_ms,
                ..
            } => {
                assert_eq!(&bytes[4..8], b"moof");
                if *segment {
                    assert!(*key, "a segment starts at a keyframe");
                    s.segments.push(*wall_ms);
                    s.segment_parts.push(0);
                }
                if *part {
                    s.parts.push((0, 0.0));
                    if let Some(n) = s.segment_parts.last_mut() {
                        *n += 1;
                    }
                }
                let p = s.parts.last_mut().expect("a chunk belongs to a part");
                p.0 += 1;
                p.1 += duration_ms;
            }
            Output::PartEnd { .. } => s.closed_parts += 1,
            Output::WantKeyframe => s.key_requests += 1,
            Output::Rebase { offset_ms, .. } => s.rebased = Some(*offset_ms),
        }
    }
    s
}

/// `secs` of 30 frames/s video (a keyframe every `gop` frames) and 48 kHz
/// AAC, starting at DTS `start`; the fake clock is 1 ms per 90 ticks.
fn run(seg: &mut Segmenter, start: u64, secs: u64, gop: u64) -> Vec<Output> {
    let mut out = Vec::new();
    let frames = secs * 30;
    let mut audio_t = 0u64;
    for i in 0..frames {
        let t = i * 3000;
        while audio_t * 90_000 / 48_000 <= t + 3000 {
            seg.push(
                aac(start + audio_t * 90_000 / 48_000),
                1_000_000 + t / 90,
                &mut out,
            );
            audio_t += 1024;
        }
        seg.push(au(start + t, i % gop == 0), 1_000_000 + t / 90, &mut out);
    }
    out
}

#[test]
fn parts_of_200_ms_and_segments_at_keyframes() {
    let mut seg = Segmenter::new(Config::default());
    seg.expect_audio(true);
    let out = run(&mut seg, 900_000, 10, 60);
    let s = tally(&out);
    assert_eq!(s.inits, 1);
    // 10 s of 2 s GOPs: segments at 0, 2, 4, 6, 8 s; the last frame still waits.
    // (the fake clock truncates to whole ms: within 1 ms)
    let want = [1_000_000, 1_002_000, 1_004_000, 1_006_000, 1_008_000u64];
    assert_eq!(s.segments.len(), want.len());
    assert!(
        s.segments.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 1),
        "{:?}",
        s.segments
    );
    assert_eq!(&s.segment_parts[..4], [10, 10, 10, 10]);
    for (frames, ms) in &s.parts[..s.parts.len() - 1] {
        assert_eq!(*frames, 6);
        assert!((ms - 200.0).abs() < 0.01, "part of {ms} ms");
    }
    assert_eq!(s.closed_parts, s.parts.len() - 1);
    // Asked once per segment that reached the target (the last has not yet).
    assert_eq!(s.key_requests, 4);
    // Audio made it into the fragments: a second traf in most chunks.
    let with_audio = out
        .iter()
        .filter(|o| matches!(o, Output::Chunk { bytes, .. } if bytes.windows(4).filter(|w| *w == b"traf").count() == 2))
        .count();
    assert!(with_audio > 250, "{with_audio} chunks with audio");
}

#[test]
fn a_long_gop_is_cut_at_the_segment_limit_and_keyframes_are_asked_for() {
    let mut seg = Segmenter::new(Config::default());
    let out = run(&mut seg, 0, 9, 1000);
    let s = tally_unchecked(&out);
    // Without audio expected, the init goes out at the first keyframe.
    assert_eq!(s.0, 1);
    // Cuts at 0, 4, 8 s (segment_max), not at keyframes there are none of.
    assert_eq!(s.1, 3);
    assert!(s.2 >= 1);
}

/// (inits, segments, keyframe requests) without asserting segments start at keyframes.
fn tally_unchecked(out: &[Output]) -> (usize, usize, usize) {
    let inits = out.iter().filter(|o| matches!(o, Output::Init(_))).count();
    let segs = out
        .iter()
        .filter(|o| matches!(o, Output::Chunk { segment: true, .. }))
        .count();
    let keys = out
        .iter()
        .filter(|o| matches!(o, Output::WantKeyframe))
        .count();
    (inits, segs, keys)
}

#[test]
fn the_33_bit_clock_wraps_without_a_cut() {
    let mut seg = Segmenter::new(Config::default());
    // Wraps 1 s in.
    let out = run(&mut seg, WRAP - 90_000, 4, 60);
    let s = tally(&out);
    assert_eq!(s.segments.len(), 2);
    assert!(s.parts[..s.parts.len() - 1].iter().all(|(f, _)| *f == 6));
}

#[test]
fn a_new_run_starts_a_segment_at_its_first_keyframe() {
    let mut seg = Segmenter::new(Config::default());
    let mut out = run(&mut seg, 0, 3, 60);
    seg.end_run(&mut out);
    let before = tally(&out).segments.len();
    // The producer restarted: its clock starts elsewhere; the keyframe there cuts.
    out.extend(run(&mut seg, 50 * 90_000, 1, 60));
    let s = tally(&out);
    assert_eq!(s.segments.len(), before + 1);
    // Media time stayed continuous: every part but the run's last is whole.
    assert!(s.parts.iter().all(|(_, ms)| *ms <= 200.0 + 0.01));
    assert_eq!(s.inits, 1, "same parameter sets: the same init");
}

#[test]
fn frames_before_the_first_keyframe_are_dropped() {
    let mut seg = Segmenter::new(Config::default());
    let mut out = Vec::new();
    for i in 0..5 {
        seg.push(au(i * 3000, false), i * 100 / 3, &mut out);
    }
    assert!(out.is_empty());
    seg.push(au(15_000, true), 166, &mut out);
    seg.push(au(18_000, false), 200, &mut out);
    let s = tally(&out);
    assert_eq!((s.inits, s.segments.len()), (1, 1));
}

#[test]
fn frames_that_arrive_in_a_burst_get_the_wall_time_the_steady_ones_say() {
    let mut seg = Segmenter::new(Config::default());
    let mut out = Vec::new();
    // 60 frames (2 s) all arrive at once at wall 10_000, then steadily 40 ms late.
    for i in 0..60u64 {
        seg.push(au(i * 3000, i == 0), 10_000, &mut out);
    }
    for i in 60..130u64 {
        seg.push(au(i * 3000, i % 60 == 0), 8_040 + i * 100 / 3, &mut out);
    }
    let s = tally(&out);
    // The burst said frame 0 came at 10 000 − 2 s; the steady frames say 8 040
    // (less than 10 ms of creep), and the window is told to rebase.
    assert_eq!(s.segments[0], 9_967);
    let off = s.rebased.expect("a rebase");
    assert!((off - 8_040.0).abs() <= 10.0, "rebased to {off}");
    assert!(
        s.segments[1].abs_diff(10_040) <= 10,
        "second at {}",
        s.segments[1]
    );
}
