//! The media playlist (RFC 8216bis, LL-HLS) of a [`Window`], and the dates it
//! and the HTTP headers carry.

use std::fmt::Write;

use super::window::Window;

/// What the playlist says about timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// EXT-X-TARGETDURATION (s): no segment is longer.
    pub target_duration: u64,
    pub part_target_ms: u64,
}

impl Timing {
    /// PART-HOLD-BACK: three part targets, the spec's recommended minimum.
    pub fn part_hold_back(&self) -> f64 {
        3.0 * self.part_target_ms as f64 / 1000.0
    }
}

pub fn init_uri(n: u64) -> String {
    format!("init-{n}.mp4")
}
pub fn segment_uri(msn: u64) -> String {
    format!("seg-{msn}.m4s")
}
pub fn part_uri(msn: u64, part: usize) -> String {
    format!("part-{msn}-{part}.m4s")
}

/// Segments whose parts are listed: the last three (the spec asks for the
/// parts of the last three target durations at least… at most; fewer lines).
const SEGMENTS_WITH_PARTS: usize = 3;

pub fn render(w: &Window, t: Timing) -> String {
    let mut s = String::with_capacity(4096);
    s.push_str("#EXTM3U\n#EXT-X-VERSION:9\n");
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{}", t.target_duration);
    let _ = writeln!(
        s,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
        t.part_hold_back()
    );
    let _ = writeln!(
        s,
        "#EXT-X-PART-INF:PART-TARGET={:.3}",
        t.part_target_ms as f64 / 1000.0
    );
    let first = w.segments.front().map_or(0, |seg| seg.msn);
    let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first}");
    if w.discontinuity_sequence > 0 {
        let _ = writeln!(
            s,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            w.discontinuity_sequence
        );
    }
    let with_parts = w.segments.len().saturating_sub(SEGMENTS_WITH_PARTS);
    for (i, seg) in w.segments.iter().enumerate() {
        if seg.discontinuity && i > 0 {
            s.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if i == 0 || seg.discontinuity {
            let _ = writeln!(s, "#EXT-X-MAP:URI=\"{}\"", init_uri(seg.init));
        }
        let _ = writeln!(s, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_ms(seg.pdt_ms));
        if i >= with_parts {
            for (k, p) in seg.parts.iter().enumerate().take(seg.complete_parts()) {
                let _ = writeln!(
                    s,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}\"{}",
                    p.duration_ms / 1000.0,
                    part_uri(seg.msn, k),
                    if p.independent {
                        ",INDEPENDENT=YES"
                    } else {
                        ""
                    }
                );
            }
        }
        if seg.complete {
            let _ = writeln!(
                s,
                "#EXTINF:{:.5},\n{}",
                seg.duration_ms() / 1000.0,
                segment_uri(seg.msn)
            );
        }
    }
    if let Some((msn, part)) = w.next_part() {
        let _ = writeln!(
            s,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            part_uri(msn, part)
        );
    }
    s
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-12-03T18:46:22.123Z`
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t / 60 % 60,
        t % 60,
        ms % 1000
    )
}

/// `Thu, 03 Dec 2026 18:46:22 GMT` (RFC 9110 § 5.6.7).
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let (y, mo, d) = civil(days);
    let t = secs % 86_400;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(mo - 1) as usize],
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::hls::segmenter::Output;
    use bytes::Bytes;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_323_582_123), "2026-12-03T18:46:22.123Z");
        assert_eq!(http_date(1_796_323_582), "Thu, 03 Dec 2026 18:46:22 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn a_playlist_lists_whole_parts_segments_and_the_next_part() {
        let mut w = Window::new(6, 0);
        w.apply(Output::Init(Bytes::from_static(b"i")));
        for seg in 0..2 {
            for part in 0..3 {
                w.apply(Output::Chunk {
                    bytes: Bytes::from_static(b"c"),
                    part: true,
                    segment: part == 0,
                    key: part == 0,
                    media_ms: (seg * 600 + part * 200) as f64,
                    wall_ms: 1_796_323_582_000 + seg * 600,
                    timeline: 0,
                    duration_ms: 200.0,
                });
                if seg == 0 || part < 2 {
                    w.apply(Output::PartEnd { segment: part == 2 });
                }
            }
        }
        let p = render(
            &w,
            Timing {
                target_duration: 4,
                part_target_ms: 200,
            },
        );
        let expected = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:4
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-MAP:URI=\"init-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-12-03T18:46:22.000Z
#EXT-X-PART:DURATION=0.20000,URI=\"part-0-0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20000,URI=\"part-0-1.m4s\"
#EXT-X-PART:DURATION=0.20000,URI=\"part-0-2.m4s\"
#EXTINF:0.60000,
seg-0.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-12-03T18:46:22.600Z
#EXT-X-PART:DURATION=0.20000,URI=\"part-1-0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20000,URI=\"part-1-1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-1-2.m4s\"
";
        assert_eq!(p, expected);
    }
}
