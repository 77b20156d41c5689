//! Streams reachable over HTTP, found by their viewer token.

use std::sync::{Arc, RwLock};

use crate::supervisor::Supervisor;
use crate::token;

/// One stream as the HTTP side sees it.
#[derive(Clone)]
pub struct StreamEntry {
    pub id: String,
    pub token: String,
    pub supervisor: Supervisor,
    /// `GET /{token}/stream.ts` is served.
    pub http_ts: bool,
    /// `POST /{token}/whep` is served.
    pub webrtc: bool,
    /// The producer's RTP payload types (video, audio); `None`: the WHEP
    /// service's defaults (`--video-pt` / `--audio-pt`).
    pub rtp_pts: Option<(u8, u8)>,
}

impl StreamEntry {
    /// A stream with both viewer kinds and the default payload types.
    pub fn new(id: impl Into<String>, token: impl Into<String>, supervisor: Supervisor) -> Self {
        Self {
            id: id.into(),
            token: token.into(),
            supervisor,
            http_ts: true,
            webrtc: true,
            rtp_pts: None,
        }
    }
}

/// The streams this server serves. `host` has one; `serve` many.
#[derive(Clone, Default)]
pub struct Registry {
    streams: Arc<RwLock<Vec<StreamEntry>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, entry: StreamEntry) {
        self.streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    /// The stream called `id`.
    pub fn by_id(&self, id: &str) -> Option<StreamEntry> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }

    pub fn remove(&self, id: &str) -> Option<StreamEntry> {
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        let at = streams.iter().position(|s| s.id == id)?;
        Some(streams.remove(at))
    }

    /// The stream whose token is `given`. Every entry is compared in constant
    /// time, so the time taken says nothing about how close a guess was.
    pub fn by_token(&self, given: &str) -> Option<StreamEntry> {
        let streams = self.streams.read().unwrap_or_else(|e| e.into_inner());
        let at = position_of(
            streams.iter().map(|s| s.token.as_str()),
            given,
            token::matches,
        );
        at.map(|i| streams[i].clone())
    }

    /// Viewers of every stream (the slots their supervisors hold).
    pub fn viewers(&self) -> usize {
        self.all()
            .iter()
            .map(|e| e.supervisor.status().viewers)
            .sum()
    }

    pub fn all(&self) -> Vec<StreamEntry> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Which of `tokens` is `given`, by `same` (constant time per comparison),
/// asked of EVERY token whatever the answer: no early exit says where (or
/// whether) a match was.
fn position_of<'a>(
    tokens: impl Iterator<Item = &'a str>,
    given: &str,
    mut same: impl FnMut(&str, &str) -> bool,
) -> Option<usize> {
    let mut found = None;
    for (i, t) in tokens.enumerate() {
        let hit = same(t, given);
        if hit && found.is_none() {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lookup_compares_with_every_entry_whatever_it_finds() {
        let tokens = ["aaaa", "bbbb", "cccc", "dddd", "eeee"];
        for (given, want) in [
            ("aaaa", Some(0)),
            ("dddd", Some(3)),
            ("zzzz", None),
            ("a", None),
        ] {
            let mut asked = Vec::new();
            let at = position_of(tokens.iter().copied(), given, |t, g| {
                asked.push(t.to_owned());
                token::matches(t, g)
            });
            assert_eq!(at, want, "{given}");
            assert_eq!(asked, tokens, "{given}: every entry compared, in order");
        }
    }
}
