//! The files a recording left: listed for the API, and pruned by age and
//! size (`keep_hours`, `keep_gb`) — oldest first, never the file being
//! written. Only names the recorder makes for this stream count
//! (`ID-2026-12-03T19-04-49Z.mp4`), so another stream's files (`cam-2-…`
//! beside `cam-…`) and anything else in the directory are left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long recordings are kept (either limit may be absent).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Keep {
    pub age: Option<Duration>,
    pub bytes: Option<u64>,
}

/// One recorded file.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub path: PathBuf,
    pub bytes: u64,
    pub modified: SystemTime,
}

impl Recording {
    /// The file's name (what the API shows; the directory is the config's).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Whether `file` is a name the recorder makes for stream `name`.
fn ours(file: &str, name: &str) -> bool {
    let Some(stamp) = file
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".mp4"))
    else {
        return false;
    };
    // 2026-12-03T19-04-49Z
    let b = stamp.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 | 16 => *c == b'-',
            10 => *c == b'T',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Stream `name`'s recordings in `dir`, oldest first (the names sort by time).
pub fn list(dir: &Path, name: &str) -> std::io::Result<Vec<Recording>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        if !ours(&file.to_string_lossy(), name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        out.push(Recording {
            path: entry.path(),
            bytes: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Which of `files` (oldest first) to delete at `now`: those last written
/// more than `keep.age` ago, then the oldest while all of them take more
/// than `keep.bytes`. Never `current`.
pub fn to_delete(
    files: &[Recording],
    now: SystemTime,
    keep: Keep,
    current: Option<&Path>,
) -> Vec<PathBuf> {
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut out = Vec::new();
    for f in files {
        if Some(f.path.as_path()) == current {
            continue;
        }
        let old = keep
            .age
            .is_some_and(|age| now.duration_since(f.modified).is_ok_and(|d| d > age));
        let over = keep.bytes.is_some_and(|limit| total > limit);
        if old || over {
            total -= f.bytes;
            out.push(f.path.clone());
        }
    }
    out
}

/// Delete what [`to_delete`] says in `dir`; each deletion is logged.
pub fn prune(dir: &Path, name: &str, keep: Keep, current: Option<&Path>) {
    if keep == Keep::default() {
        return;
    }
    let files = match list(dir, name) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("recording: cannot list {} to prune it: {e}", dir.display());
            return;
        }
    };
    for path in to_delete(&files, SystemTime::now(), keep, current) {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(
                "recording deleted (keep_hours / keep_gb): {}",
                path.display()
            ),
            Err(e) => tracing::warn!("recording: cannot delete {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, bytes: u64, age_s: u64, now: SystemTime) -> Recording {
        Recording {
            path: PathBuf::from(format!("/r/{name}")),
            bytes,
            modified: now - Duration::from_secs(age_s),
        }
    }

    #[test]
    fn only_this_streams_file_names_count() {
        assert!(ours("cam-2026-12-03T19-04-49Z.mp4", "cam"));
        assert!(!ours("cam-2-2026-12-03T19-04-49Z.mp4", "cam"));
        assert!(ours("cam-2-2026-12-03T19-04-49Z.mp4", "cam-2"));
        assert!(!ours("cam-2026-12-03T19-04-49Z.mp4.part", "cam"));
        assert!(!ours("cam-notes.mp4", "cam"));
        assert!(!ours("camera-2026-12-03T19-04-49Z.mp4", "cam"));
    }

    #[test]
    fn old_files_go_then_the_oldest_while_over_the_size_never_the_current_one() {
        let now = SystemTime::now();
        let files = [
            rec("a", 100, 7200, now),
            rec("b", 100, 3000, now),
            rec("c", 100, 1000, now),
            rec("d", 100, 10, now),
        ];
        let hour = Keep {
            age: Some(Duration::from_secs(3600)),
            bytes: None,
        };
        assert_eq!(to_delete(&files, now, hour, None), [PathBuf::from("/r/a")]);
        let size = Keep {
            age: None,
            bytes: Some(250),
        };
        assert_eq!(
            to_delete(&files, now, size, None),
            [PathBuf::from("/r/a"), PathBuf::from("/r/b")]
        );
        // The file being written stays, even when it alone is over.
        let tiny = Keep {
            age: None,
            bytes: Some(50),
        };
        assert_eq!(
            to_delete(&files, now, tiny, Some(Path::new("/r/d"))).len(),
            3
        );
        assert!(to_delete(&files, now, Keep::default(), None).is_empty());
    }

    #[test]
    fn listing_finds_this_streams_files_oldest_first() {
        let dir = std::env::temp_dir().join(format!("pixelpass-recordings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "cam-2026-12-03T19-04-49Z.mp4",
            "cam-2026-12-03T18-04-49Z.mp4",
            "cam-2-2026-12-03T17-00-00Z.mp4",
            "notes.txt",
        ] {
            std::fs::write(dir.join(f), b"1234").unwrap();
        }
        let names: Vec<String> = list(&dir, "cam")
            .unwrap()
            .iter()
            .map(Recording::name)
            .collect();
        assert_eq!(
            names,
            [
                "cam-2026-12-03T18-04-49Z.mp4",
                "cam-2026-12-03T19-04-49Z.mp4"
            ]
        );
        prune(
            &dir,
            "cam",
            Keep {
                age: None,
                bytes: Some(4),
            },
            None,
        );
        assert_eq!(list(&dir, "cam").unwrap().len(), 1, "the newest kept");
        assert_eq!(
            list(&dir, "cam-2").unwrap().len(),
            1,
            "another stream's file untouched"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
