//! Recording: the same CMAF the LL-HLS output serves, written to playable
//! fragmented MP4 files (`init` + one `moof`/`mdat` per frame), a new file
//! at the first segment after `file_length`, or when the parameter sets
//! change. Each chunk is written as soon as the segmenter makes it, so a
//! crash (`kill -9`) loses at most the frame being written; a stop has
//! nothing to finalize (a fragmented MP4 needs no index).
//!
//! The recorder is one more hub subscriber with its own demuxer and
//! segmenter (parts and keyframe requests are not needed here: it follows
//! the encoder's GOP).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::playlist::rfc3339_ms;
use super::segmenter::{Config, Output, Segmenter, TsInput};
use super::service::unix_ms;
use crate::hub::Hub;

#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub dir: PathBuf,
    /// A new file starts at the first keyframe after this much media.
    pub file_length: Duration,
    /// The files' name prefix (the stream's id).
    pub name: String,
    /// Older or more files are deleted (each time a file starts).
    pub keep: super::recordings::Keep,
}

/// A recording in progress; dropping it (or [`Recorder::stop`]) ends it.
pub struct Recorder {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Recorder {
    /// Check the directory can be written, then record `hub` (its layer 0).
    pub fn start(opts: RecordOptions, hub: Hub) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.dir).with_context(|| {
            format!(
                "cannot create the recording directory {}",
                opts.dir.display()
            )
        })?;
        let probe = opts.dir.join(".pixelpass-write-test");
        std::fs::write(&probe, b"").with_context(|| {
            format!(
                "cannot write in the recording directory {}",
                opts.dir.display()
            )
        })?;
        let _ = std::fs::remove_file(&probe);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(record(opts, hub, rx));
        Ok(Self { task, stop })
    }

    /// Stop: the last frame is written and the file closed.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The file being written.
struct Current {
    file: tokio::fs::File,
    path: PathBuf,
    started_ms: f64,
}

/// `DIR/NAME-2026-12-03T19-04-49Z.mp4` (no colons: portable file names).
pub fn file_name(dir: &Path, name: &str, wall_ms: u64) -> PathBuf {
    let stamp = rfc3339_ms(wall_ms);
    let stamp = format!("{}Z", &stamp[..19]).replace(':', "-");
    dir.join(format!("{name}-{stamp}.mp4"))
}

async fn record(opts: RecordOptions, hub: Hub, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut sub = hub.subscribe(Instant::now());
    let mut input = TsInput::default();
    let mut seg = Segmenter::new(Config {
        // Only the segment cut matters here: it follows the encoder's keyframes.
        part_target_ms: 1000,
        ..Config::default()
    });
    let mut outs = Vec::new();
    let mut init: Option<Bytes> = None;
    let mut new_init = false;
    let mut current: Option<Current> = None;
    loop {
        tokio::select! {
            bytes = sub.next() => {
                let Some(bytes) = bytes else { break };
                input.push(&bytes, unix_ms(), &mut seg, &mut outs);
            }
            _ = stop.changed() => {
                seg.end_run(&mut outs);
                write(&opts, &mut outs, &mut init, &mut new_init, &mut current).await;
                break;
            }
        }
        write(&opts, &mut outs, &mut init, &mut new_init, &mut current).await;
    }
    if let Some(mut c) = current {
        let _ = c.file.flush().await;
        tracing::info!("recording ended: {}", c.path.display());
    }
}

async fn write(
    opts: &RecordOptions,
    outs: &mut Vec<Output>,
    init: &mut Option<Bytes>,
    new_init: &mut bool,
    current: &mut Option<Current>,
) {
    for o in outs.drain(..) {
        match o {
            Output::Init(b) => {
                *init = Some(b);
                *new_init = true;
            }
            Output::Chunk {
                bytes,
                segment,
                media_ms,
                wall_ms,
                ..
            } => {
                let long = current.as_ref().is_some_and(|c| {
                    media_ms - c.started_ms >= opts.file_length.as_secs_f64() * 1000.0
                });
                if segment && (current.is_none() || long || *new_init) {
                    *new_init = false;
                    let Some(init) = init.as_ref() else { continue };
                    if let Some(mut c) = current.take() {
                        let _ = c.file.flush().await;
                        tracing::info!("recording done: {}", c.path.display());
                    }
                    *current = open(opts, init, media_ms, wall_ms).await;
                    let now_writing = current.as_ref().map(|c| c.path.as_path());
                    super::recordings::prune(&opts.dir, &opts.name, opts.keep, now_writing);
                }
                if let Some(c) = current.as_mut() {
                    let ok = c.file.write_all(&bytes).await.is_ok() && c.file.flush().await.is_ok();
                    if !ok {
                        tracing::error!(
                            "recording: cannot write {} (disk full?); this file ends here",
                            c.path.display()
                        );
                        *current = None;
                    }
                }
            }
            Output::PartEnd { .. } | Output::WantKeyframe | Output::Rebase { .. } => {}
        }
    }
}

async fn open(opts: &RecordOptions, init: &Bytes, media_ms: f64, wall_ms: u64) -> Option<Current> {
    let path = file_name(&opts.dir, &opts.name, wall_ms);
    let mut file = match tokio::fs::File::create(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("recording: cannot create {}: {e}", path.display());
            return None;
        }
    };
    if let Err(e) = file.write_all(init).await {
        tracing::error!("recording: cannot write {}: {e}", path.display());
        return None;
    }
    tracing::info!("recording to {}", path.display());
    Some(Current {
        file,
        path,
        started_ms: media_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_portable_and_sort_by_time() {
        let a = file_name(Path::new("/r"), "host", 1_796_323_582_123);
        assert_eq!(a, Path::new("/r/host-2026-12-03T18-46-22Z.mp4"));
        let b = file_name(Path::new("/r"), "host", 1_796_323_642_000);
        assert!(a < b);
    }
}
