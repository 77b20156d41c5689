//! The sliding window: the segments a playlist lists, their parts and the
//! init segments they need. Bounded: [`Window::max_segments`] segments.
//!
//! Sans-IO: the segmenter's outputs go in ([`Window::apply`]); the HTTP side
//! reads parts and segments out and asks whether a blocking request's part
//! exists yet ([`Window::has`]). Each part and segment counts the requests it
//! was served to (the origin's own count that a cache in front collapses them).

use std::collections::VecDeque;

use bytes::Bytes;

use super::segmenter::Output;

#[derive(Debug, Default)]
pub struct Part {
    pub chunks: Vec<Bytes>,
    pub duration_ms: f64,
    pub independent: bool,
    pub complete: bool,
    /// Times this part was served.
    pub served: u32,
}

impl Part {
    pub fn bytes(&self) -> Bytes {
        concat(self.chunks.iter())
    }
}

#[derive(Debug)]
pub struct Segment {
    pub msn: u64,
    /// Which init segment it needs.
    pub init: u64,
    /// Timestamps or parameter sets changed before it.
    pub discontinuity: bool,
    /// Wall time (ms since the epoch) of its first frame.
    pub pdt_ms: u64,
    /// Its first frame's media time (ms) and timeline (for a rebase).
    media_ms: f64,
    timeline: u32,
    pub parts: Vec<Part>,
    pub complete: bool,
    pub served: u32,
}

impl Segment {
    pub fn duration_ms(&self) -> f64 {
        self.parts.iter().map(|p| p.duration_ms).sum()
    }
    pub fn bytes(&self) -> Bytes {
        concat(self.parts.iter().flat_map(|p| p.chunks.iter()))
    }
    /// Parts that are whole (listed in the playlist).
    pub fn complete_parts(&self) -> usize {
        self.parts.iter().take_while(|p| p.complete).count()
    }
}

fn concat<'a>(chunks: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let len = chunks.clone().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(len);
    for c in chunks {
        out.extend_from_slice(c);
    }
    Bytes::from(out)
}

/// The most requests any one part or segment got at the origin (past and present).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Served {
    pub max_per_part: u32,
    pub max_per_segment: u32,
}

pub struct Window {
    pub max_segments: usize,
    pub segments: VecDeque<Segment>,
    /// Init segments by number (the first segment that needs it); those no segment in the window needs are dropped.
    pub inits: Vec<(u64, Bytes)>,
    next_msn: u64,
    /// Discontinuities that left the window (EXT-X-DISCONTINUITY-SEQUENCE).
    pub discontinuity_sequence: u64,
    new_init: bool,
    dropped: Served,
}

impl Window {
    /// A window whose first segment will be `first_msn`.
    pub fn new(max_segments: usize, first_msn: u64) -> Self {
        Self {
            max_segments: max_segments.max(2),
            segments: VecDeque::new(),
            inits: Vec::new(),
            next_msn: first_msn,
            discontinuity_sequence: 0,
            new_init: false,
            dropped: Served::default(),
        }
    }

    pub fn apply(&mut self, out: Output) {
        match out {
            Output::Init(bytes) => {
                // Numbered by the segment that will need it first: never reused.
                let n = self.next_msn;
                self.inits.retain(|(k, _)| *k != n);
                self.inits.push((n, bytes));
                self.new_init = true;
            }
            Output::Chunk {
                bytes,
                part,
                segment,
                key,
                media_ms,
                wall_ms,
                timeline,
                duration_ms,
            } => {
                if segment || self.segments.is_empty() {
                    self.open_segment(wall_ms, media_ms, timeline);
                }
                let Some(seg) = self.segments.back_mut() else {
                    return;
                };
                if part || seg.parts.is_empty() {
                    seg.parts.push(Part {
                        independent: key,
                        ..Part::default()
                    });
                }
                if let Some(p) = seg.parts.last_mut() {
                    p.chunks.push(bytes);
                    p.duration_ms += duration_ms;
                }
            }
            Output::PartEnd { segment } => {
                if let Some(seg) = self.segments.back_mut() {
                    if let Some(p) = seg.parts.last_mut() {
                        p.complete = true;
                    }
                    seg.complete |= segment;
                }
            }
            Output::WantKeyframe => {}
            Output::Rebase {
                timeline,
                offset_ms,
            } => {
                for seg in self
                    .segments
                    .iter_mut()
                    .rev()
                    .take_while(|s| s.timeline == timeline)
                {
                    seg.pdt_ms = (seg.media_ms + offset_ms).max(0.0).round() as u64;
                }
            }
        }
    }

    fn open_segment(&mut self, wall_ms: u64, media_ms: f64, timeline: u32) {
        if let Some(last) = self.segments.back_mut() {
            // A segment cut without its PartEnd (cannot happen from the segmenter; be safe).
            last.complete = true;
            if let Some(p) = last.parts.last_mut() {
                p.complete = true;
            }
        }
        let init = self.inits.last().map_or(0, |(n, _)| *n);
        let discontinuity = self.new_init && !self.segments.is_empty();
        self.new_init = false;
        self.segments.push_back(Segment {
            msn: self.next_msn,
            init,
            discontinuity,
            pdt_ms: wall_ms,
            media_ms,
            timeline,
            parts: Vec::new(),
            complete: false,
            served: 0,
        });
        self.next_msn += 1;
        while self.segments.len() > self.max_segments {
            if let Some(old) = self.segments.pop_front() {
                self.dropped.max_per_segment = self.dropped.max_per_segment.max(old.served);
                let parts = old.parts.iter().map(|p| p.served).max().unwrap_or(0);
                self.dropped.max_per_part = self.dropped.max_per_part.max(parts);
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
            }
        }
        if let Some(first) = self.segments.front().map(|s| s.init) {
            self.inits.retain(|(n, _)| *n >= first);
        }
    }

    /// The sequence number the next segment gets.
    pub fn next_msn(&self) -> u64 {
        self.next_msn
    }

    pub fn init(&self, n: u64) -> Option<&Bytes> {
        self.inits.iter().find(|(k, _)| *k == n).map(|(_, b)| b)
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    pub fn segment_mut(&mut self, msn: u64) -> Option<&mut Segment> {
        let first = self.segments.front()?.msn;
        self.segments
            .get_mut(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    /// The last listed part: (msn, index), or `None` before the first.
    pub fn last_part(&self) -> Option<(u64, usize)> {
        self.segments
            .iter()
            .rev()
            .find_map(|s| s.complete_parts().checked_sub(1).map(|i| (s.msn, i)))
    }

    /// The part the playlist's preload hint names: the first one not yet whole.
    pub fn next_part(&self) -> Option<(u64, usize)> {
        let last = self.segments.back()?;
        Some(if last.complete {
            (last.msn + 1, 0)
        } else {
            (last.msn, last.complete_parts())
        })
    }

    /// Does the playlist list part `part` of segment `msn` (or something after
    /// it)? `part: None` asks for the whole segment.
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        let later = self
            .segments
            .iter()
            .any(|s| s.msn > msn && s.complete_parts() > 0);
        match (self.segment(msn), part) {
            (Some(s), None) => s.complete,
            (Some(s), Some(p)) => s.complete_parts() > p || later,
            (None, _) => later,
        }
    }

    /// The most requests one part or one segment got so far.
    pub fn served(&self) -> Served {
        let mut s = self.dropped;
        for seg in &self.segments {
            s.max_per_segment = s.max_per_segment.max(seg.served);
            for p in &seg.parts {
                s.max_per_part = s.max_per_part.max(p.served);
            }
        }
        s
    }

    /// Bytes held (the memory bound's measure).
    pub fn bytes_held(&self) -> usize {
        let media: usize = self
            .segments
            .iter()
            .flat_map(|s| s.parts.iter().flat_map(|p| p.chunks.iter()))
            .map(Bytes::len)
            .sum();
        media + self.inits.iter().map(|(_, b)| b.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(part: bool, segment: bool) -> Output {
        Output::Chunk {
            bytes: Bytes::from_static(b"c"),
            part,
            segment,
            key: segment,
            media_ms: 0.0,
            wall_ms: 1000,
            timeline: 0,
            duration_ms: 100.0,
        }
    }

    #[test]
    fn parts_are_listed_once_whole_and_the_window_slides() {
        let mut w = Window::new(3, 0);
        w.apply(Output::Init(Bytes::from_static(b"init")));
        w.apply(chunk(true, true));
        assert_eq!((w.last_part(), w.next_part()), (None, Some((0, 0))));
        assert!(!w.has(0, Some(0)));
        w.apply(chunk(false, false));
        w.apply(Output::PartEnd { segment: false });
        assert_eq!((w.last_part(), w.next_part()), (Some((0, 0)), Some((0, 1))));
        assert!(w.has(0, Some(0)) && !w.has(0, Some(1)) && !w.has(0, None));
        w.apply(chunk(true, false));
        w.apply(Output::PartEnd { segment: true });
        assert!(w.has(0, None) && !w.has(0, Some(5)));
        assert_eq!(w.next_part(), Some((1, 0)));
        for _ in 0..4 {
            w.apply(chunk(true, true));
            w.apply(Output::PartEnd { segment: true });
        }
        assert_eq!(w.segments.len(), 3);
        assert_eq!(w.segments.front().map(|s| s.msn), Some(2));
        assert_eq!(
            w.segment(4).map(|s| s.bytes()),
            Some(Bytes::from_static(b"c"))
        );
        assert!(w.segment(1).is_none());
        assert_eq!(
            w.inits.len(),
            1,
            "the init the window's segments need stays"
        );
    }

    #[test]
    fn a_new_init_is_a_discontinuity_and_old_inits_leave_with_their_segments() {
        let mut w = Window::new(2, 0);
        w.apply(Output::Init(Bytes::from_static(b"a")));
        w.apply(chunk(true, true));
        w.apply(Output::Init(Bytes::from_static(b"b")));
        w.apply(chunk(true, true));
        assert!(w.segments[1].discontinuity);
        assert_eq!(
            w.segments[1].init, 1,
            "named after the segment that needs it first"
        );
        w.apply(chunk(true, true));
        w.apply(chunk(true, true));
        assert_eq!(w.inits.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1]);
        assert_eq!(w.discontinuity_sequence, 1);
    }
}
