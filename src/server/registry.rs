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

    pub fn remove(&self, id: &str) -> Option<StreamEntry> {
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        let at = streams.iter().position(|s| s.id == id)?;
        Some(streams.remove(at))
    }

    /// The stream whose token is `given`. Every entry is compared in constant
    /// time, so the time taken says nothing about how close a guess was.
    pub fn by_token(&self, given: &str) -> Option<StreamEntry> {
        let streams = self.streams.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for s in streams.iter() {
            if token::matches(&s.token, given) && found.is_none() {
                found = Some(s.clone());
            }
        }
        found
    }

    pub fn all(&self) -> Vec<StreamEntry> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
