//! A config file read again (`SIGHUP`, `systemctl reload`): what changed in
//! the file is applied to the running streams, nothing else.
//!
//! [`plan`] is pure: the file's streams as last applied and as read now give
//! streams to add, to replace and to remove; streams the file did not change
//! are left alone (their viewers never notice), and so are streams made
//! through the API, unless the file now names their id. [`Streams::reload`]
//! carries a plan out, one stream at a time; a stream that cannot be applied
//! is reported and the others go on.

use serde::Serialize;

use super::{StreamError, Streams};
use crate::config::StreamConfig;

/// What a reload does, by stream id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub add: Vec<StreamConfig>,
    pub replace: Vec<StreamConfig>,
    pub remove: Vec<String>,
    pub unchanged: Vec<String>,
}

/// Compare the file as last applied (`before`) with the file now (`after`);
/// `running`: the ids that exist now (the API may have added or removed some).
pub fn plan(before: &[StreamConfig], after: &[StreamConfig], running: &[String]) -> Plan {
    let mut p = Plan::default();
    let runs = |id: &str| running.iter().any(|r| r == id);
    for new in after {
        match before.iter().find(|old| old.id == new.id) {
            Some(old) if old == new && runs(&new.id) => p.unchanged.push(new.id.clone()),
            _ if runs(&new.id) => p.replace.push(new.clone()),
            _ => p.add.push(new.clone()),
        }
    }
    for old in before {
        if !after.iter().any(|new| new.id == old.id) && runs(&old.id) {
            p.remove.push(old.id.clone());
        }
    }
    p
}

/// What a reload did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    /// `id: why` for each stream that could not be applied.
    pub failed: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "added {}; changed (restarted) {}; removed {}; unchanged {}",
            list(&self.added),
            list(&self.changed),
            list(&self.removed),
            self.unchanged.len()
        )?;
        if !self.failed.is_empty() {
            write!(f, "; NOT applied: {}", self.failed.join("; "))?;
        }
        Ok(())
    }
}

impl Streams {
    /// Apply the file's streams (`after`) over the ones last applied from it (`before`).
    pub async fn reload(&self, before: &[StreamConfig], after: &[StreamConfig]) -> Outcome {
        let p = plan(before, after, &self.ids());
        let mut fails = Vec::new();
        let mut failed = |id: &str, e: StreamError| fails.push(format!("{id}: {e}"));
        let mut removed = Vec::new();
        for id in p.remove {
            match self.delete(&id).await {
                Ok(()) | Err(StreamError::NotFound(_)) => removed.push(id),
                Err(e) => failed(&id, e),
            }
        }
        let mut changed = Vec::new();
        for cfg in p.replace {
            let id = cfg.id.clone();
            match self.replace(&id, cfg.clone()).await {
                Ok(_) => changed.push(id),
                // Deleted through the API meanwhile: it is new again.
                Err(StreamError::NotFound(_)) => match self.create(cfg) {
                    Ok(_) => changed.push(id),
                    Err(e) => failed(&id, e),
                },
                Err(e) => failed(&id, e),
            }
        }
        let mut added = Vec::new();
        for cfg in p.add {
            let id = cfg.id.clone();
            match self.create(cfg) {
                Ok(_) => added.push(id),
                Err(e) => failed(&id, e),
            }
        }
        Outcome {
            added,
            changed,
            removed,
            unchanged: p.unchanged,
            failed: fails,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str, bitrate: u32) -> StreamConfig {
        let mut c: StreamConfig =
            serde_json::from_str(&format!(r#"{{"id":"{id}","input":["-i","x.ts"]}}"#)).unwrap();
        c.video_bitrate_kbps = bitrate;
        c
    }

    fn ids(v: &[StreamConfig]) -> Vec<&str> {
        v.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn a_layers_change_is_a_changed_stream() {
        let before = [stream("cam", 1000)];
        let mut layered = stream("cam", 1000);
        layered.layers = 3;
        let p = plan(&before, &[layered.clone()], &["cam".to_owned()]);
        assert_eq!(ids(&p.replace), ["cam"]);
        assert!(p.unchanged.is_empty());
        let p = plan(&[layered.clone()], &[layered], &["cam".to_owned()]);
        assert_eq!(p.unchanged, ["cam"]);
    }

    #[test]
    fn only_what_the_file_changed_is_touched() {
        let before = [
            stream("keep", 1000),
            stream("drop", 1000),
            stream("change", 1000),
        ];
        let after = [
            stream("keep", 1000),
            stream("change", 2000),
            stream("new", 1000),
        ];
        // "api" was made through the API: the file does not own it.
        let running: Vec<String> = ["keep", "drop", "change", "api"].map(String::from).into();
        let p = plan(&before, &after, &running);
        assert_eq!(ids(&p.add), ["new"]);
        assert_eq!(ids(&p.replace), ["change"]);
        assert_eq!(p.replace[0].video_bitrate_kbps, 2000);
        assert_eq!(p.remove, ["drop"]);
        assert_eq!(p.unchanged, ["keep"]);
    }

    #[test]
    fn the_api_in_between_is_respected() {
        let before = [stream("a", 1000), stream("b", 1000)];
        let after = [stream("a", 1000), stream("api", 500)];
        // "a" was deleted through the API but the file still names it: it
        // comes back (the file owns its streams). "b" is gone already: nothing
        // to remove. "api" was made through the API and the file now names
        // it: the file's version replaces it.
        let running: Vec<String> = ["api"].map(String::from).into();
        let p = plan(&before, &after, &running);
        assert_eq!(ids(&p.add), ["a"]);
        assert_eq!(ids(&p.replace), ["api"]);
        assert!(p.remove.is_empty() && p.unchanged.is_empty());
        // The same file again: nothing to do.
        let p = plan(&after, &after, &["a".into(), "api".into()]);
        assert_eq!(p.unchanged, ["a", "api"]);
        assert!(p.add.is_empty() && p.replace.is_empty() && p.remove.is_empty());
    }

    #[test]
    fn the_outcome_reads_as_one_line() {
        let o = Outcome {
            added: vec!["new".into()],
            changed: vec!["change".into()],
            removed: vec![],
            unchanged: vec!["keep".into()],
            failed: vec!["x: a stream with id \"x\" exists already".into()],
        };
        assert_eq!(
            o.to_string(),
            "added new; changed (restarted) change; removed none; unchanged 1; NOT applied: x: a stream with id \"x\" exists already"
        );
    }
}
