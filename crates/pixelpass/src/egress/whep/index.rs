//! The WHEP resources that exist: resource id → which stream, its ETag, the
//! browser's ICE user fragment, and the viewer's supervisor lease.
//!
//! The index owns the leases: removing an entry (DELETE, consent timeout,
//! DTLS failure, stream teardown) frees the viewer slot at that moment. The
//! engine owns the `Rtc`s and removes entries for the peers it drops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::layer::PeerView;
use crate::supervisor::Lease;

pub struct Entry {
    pub stream: Arc<str>,
    pub etag: String,
    /// `a=ice-ufrag` of the offer; a PATCH with another one is an ICE restart.
    pub remote_ufrag: Option<String>,
    /// What the engine last said of the peer (layer, link).
    pub view: PeerView,
    _lease: Lease,
}

#[derive(Default)]
pub struct Index {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
}

/// What PATCH needs to know about a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub etag: String,
    pub remote_ufrag: Option<String>,
}

impl Index {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(
        &self,
        resource: Arc<str>,
        stream: Arc<str>,
        etag: String,
        remote_ufrag: Option<String>,
        lease: Lease,
    ) {
        let old = self.lock().insert(
            resource,
            Entry {
                stream,
                etag,
                remote_ufrag,
                view: PeerView {
                    mode: "connecting",
                    ..PeerView::default()
                },
                _lease: lease,
            },
        );
        drop(old);
    }

    /// The engine's word on a peer.
    pub fn set_view(&self, resource: &str, view: PeerView) {
        if let Some(e) = self.lock().get_mut(resource) {
            e.view = view;
        }
    }

    /// A peer's view, if the resource exists and belongs to `stream`.
    pub fn view(&self, resource: &str, stream: &str) -> Option<PeerView> {
        let map = self.lock();
        let e = map.get(resource).filter(|e| &*e.stream == stream)?;
        Some(e.view.clone())
    }

    /// Every peer of `stream` (all streams: `None`): its resource id and view.
    pub fn views(&self, stream: Option<&str>) -> Vec<(Arc<str>, Arc<str>, PeerView)> {
        self.lock()
            .iter()
            .filter(|(_, e)| stream.is_none_or(|s| &*e.stream == s))
            .map(|(r, e)| (r.clone(), e.stream.clone(), e.view.clone()))
            .collect()
    }

    /// The resource, if it exists and belongs to `stream`.
    pub fn get(&self, resource: &str, stream: &str) -> Option<Resource> {
        let map = self.lock();
        let e = map.get(resource).filter(|e| &*e.stream == stream)?;
        Some(Resource {
            etag: e.etag.clone(),
            remote_ufrag: e.remote_ufrag.clone(),
        })
    }

    /// Remove `resource` if it belongs to `stream`; its lease is freed on return.
    pub fn remove_in(&self, resource: &str, stream: &str) -> bool {
        let removed = {
            let mut map = self.lock();
            match map.get(resource) {
                Some(e) if &*e.stream == stream => map.remove(resource),
                _ => None,
            }
        };
        // The lease is dropped here, outside the index lock.
        removed.is_some()
    }

    /// Remove `resource` whatever its stream (the engine dropped the peer).
    pub fn remove(&self, resource: &str) -> bool {
        let removed = self.lock().remove(resource);
        removed.is_some()
    }

    /// Remove every resource of `stream`; returns their ids.
    pub fn remove_stream(&self, stream: &str) -> Vec<Arc<str>> {
        let removed: Vec<(Arc<str>, Entry)> = {
            let mut map = self.lock();
            let ids: Vec<Arc<str>> = map
                .iter()
                .filter(|(_, e)| &*e.stream == stream)
                .map(|(k, _)| k.clone())
                .collect();
            ids.into_iter()
                .filter_map(|k| map.remove(&k).map(|e| (k, e)))
                .collect()
        };
        removed.into_iter().map(|(k, _)| k).collect()
    }

    /// Resources of `stream` (all streams with `None`).
    pub fn count(&self, stream: Option<&str>) -> usize {
        self.lock()
            .values()
            .filter(|e| stream.is_none_or(|s| &*e.stream == s))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hub::{Hub, HubConfig};
    use crate::supervisor::{BoxFuture, Policy, Producer, ProducerError, Run, Supervisor};

    struct NeverStarts;
    impl Producer for NeverStarts {
        fn start(&self, _hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn removing_an_entry_frees_its_slot_at_once() {
        let policy = Policy {
            max_viewers: 3,
            linger: Duration::ZERO,
            ..Policy::default()
        };
        let sup = Supervisor::spawn(
            policy,
            Hub::new(HubConfig::default()),
            Arc::new(NeverStarts),
        );
        let index = Index::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        index.insert(
            "r1".into(),
            a.clone(),
            "\"e1\"".into(),
            Some("uf".into()),
            sup.acquire().unwrap(),
        );
        index.insert(
            "r2".into(),
            a.clone(),
            "\"e2\"".into(),
            None,
            sup.acquire().unwrap(),
        );
        index.insert(
            "r3".into(),
            b.clone(),
            "\"e3\"".into(),
            None,
            sup.acquire().unwrap(),
        );
        assert_eq!(sup.status().viewers, 3);
        assert_eq!(index.get("r1", "a").map(|r| r.etag), Some("\"e1\"".into()));
        assert_eq!(
            index.get("r1", "b"),
            None,
            "a resource is found only under its own stream"
        );
        assert!(!index.remove_in("r1", "b"));
        assert!(index.remove_in("r1", "a"));
        assert_eq!(sup.status().viewers, 2);
        assert!(!index.remove("r1"), "twice is a no-op");
        assert_eq!(index.remove_stream("a"), vec![Arc::<str>::from("r2")]);
        assert_eq!((index.count(None), index.count(Some("b"))), (1, 1));
        assert_eq!(sup.status().viewers, 1);
        sup.shutdown().await;
    }
}
