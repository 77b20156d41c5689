//! A stream's `record` table: its recorder (one more hub subscriber that
//! writes the stream's CMAF to files whenever it runs, see
//! `egress::hls::record`) and the list of its files for the API.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::{StreamError, Streams};
use crate::config::stream::{RecordConfig, StreamConfig};
use crate::egress::hls::playlist::rfc3339_ms;
use crate::egress::hls::record::{RecordOptions, Recorder};
use crate::egress::hls::recordings::{self, Keep};
use crate::hub::Hub;

/// What `GET /api/v1/streams/{id}/recordings` shows.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingsView {
    pub dir: String,
    /// Oldest first.
    pub files: Vec<FileView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    pub name: String,
    pub bytes: u64,
    /// When it was last written (RFC 3339, UTC).
    pub modified: String,
}

fn keep(r: &RecordConfig) -> Keep {
    Keep {
        age: r.keep_hours.map(|h| Duration::from_secs_f64(h * 3600.0)),
        bytes: r.keep_gb.map(|gb| (gb * 1e9) as u64),
    }
}

/// The stream's recorder, if it has a `record` table; a directory that
/// cannot be made or written is the stream's error (`record.dir`).
pub(super) fn start(
    config: &StreamConfig,
    hub: &Hub,
) -> Result<Option<Arc<Recorder>>, StreamError> {
    let Some(r) = &config.record else {
        return Ok(None);
    };
    let opts = RecordOptions {
        dir: r.dir.clone(),
        file_length: Duration::from_secs_f64(r.segment_seconds),
        name: config.id.clone(),
        keep: keep(r),
    };
    Recorder::start(opts, hub.clone())
        .map(|rec| Some(Arc::new(rec)))
        .map_err(|e| StreamError::Conflict(format!("record.dir: {e:#}")))
}

impl Streams {
    /// The files stream `id` recorded (in its `record.dir`), oldest first.
    pub fn recordings(&self, id: &str) -> Result<RecordingsView, StreamError> {
        let config = self
            .lock()
            .get(id)
            .map(|s| s.config.clone())
            .ok_or_else(|| StreamError::NotFound(id.to_owned()))?;
        let Some(r) = &config.record else {
            return Err(StreamError::Conflict(format!(
                "stream {id:?} records nothing: give it a `record` table (dir, segment_seconds, keep_hours or keep_gb)"
            )));
        };
        let files = recordings::list(&r.dir, id)
            .map_err(|e| StreamError::Internal(format!("cannot list {}: {e}", r.dir.display())))?;
        Ok(RecordingsView {
            dir: r.dir.display().to_string(),
            files: files
                .iter()
                .map(|f| FileView {
                    name: f.name(),
                    bytes: f.bytes,
                    modified: rfc3339_ms(
                        f.modified
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                    ),
                })
                .collect(),
        })
    }
}
