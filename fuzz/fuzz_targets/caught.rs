//! The panic hook of targets whose code under test catches panics itself:
//! the server wraps str0m's handling of an untrusted offer in `catch_unwind`
//! (answered `400`). A panic inside str0m is counted, the first one from each
//! place printed, and the input goes on; a panic anywhere else (pixelpass
//! itself, or one that escapes the server's catch) aborts: a crash.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static CAUGHT: AtomicU64 = AtomicU64::new(0);
static PLACES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let n = CAUGHT.fetch_add(1, Ordering::Relaxed) + 1;
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let new = PLACES
            .lock()
            .map(|mut p| p.insert(place.clone()))
            .unwrap_or(false);
        if !place.contains("/str0m") {
            eprintln!("fuzz: panic outside str0m: {info}");
            std::process::abort();
        }
        if new {
            eprintln!(
                "fuzz: str0m panic #{n} at {place} (new place; caught by the server): {info}"
            );
        }
    }));
}

/// Run `f`; a panic out of it (not caught by the code under test) aborts.
pub fn expect_answer<T>(f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("fuzz: a panic escaped the server's own catch");
            std::process::abort();
        }
    }
}
