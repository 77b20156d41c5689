//! Where a benchmark's words go: the table on stdout, or with `--json` one
//! JSON object per step on stdout and the prose on stderr, so a script reads
//! stdout line by line and gets only the figures.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Chosen once, from the benchmark's `--json`.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A line of prose or table: stdout for the table, stderr under `--json`.
pub fn say(line: std::fmt::Arguments<'_>) {
    if json() {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// One measured step: its table line, or under `--json` the same figures as
/// one JSON object tagged with the benchmark's name.
pub fn step(bench: &str, table_line: &str, figures: serde_json::Value) {
    if json() {
        let mut obj = serde_json::Map::new();
        obj.insert("bench".into(), bench.into());
        if let serde_json::Value::Object(m) = figures {
            obj.extend(m);
        }
        println!("{}", serde_json::Value::Object(obj));
    } else {
        println!("{table_line}");
    }
}

/// `say!("…", args)`: [`say`] with `format_args!`.
#[macro_export]
macro_rules! say {
    () => { $crate::output::say(format_args!("")) };
    ($($t:tt)*) => { $crate::output::say(format_args!($($t)*)) };
}
