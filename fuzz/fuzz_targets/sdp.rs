//! An SDP offer through the WHEP viewer's and the WHIP publisher's offer
//! paths (the checks, str0m's parser and `accept_offer`):
//! `pixelpass::fuzzing::Sdp`.
//!
//! The server catches a panic inside str0m and answers `400`; libFuzzer's
//! hook would abort on it before that catch, so this target's hook only
//! counts (and prints the first of each place) — a panic that escapes the
//! server's own catch still aborts (libfuzzer-sys catches it at the top).
#![no_main]

use std::sync::OnceLock;

use pixelpass::fuzzing::Sdp;

mod caught;

static SDP: OnceLock<Sdp> = OnceLock::new();

libfuzzer_sys::fuzz_target!(init: caught::install(), |data: &[u8]| {
    let Ok(offer) = std::str::from_utf8(data) else {
        return;
    };
    let sdp = SDP.get_or_init(|| match Sdp::new() {
        Ok(s) => s,
        Err(e) => panic!("cannot set up the offer paths: {e:#}"),
    });
    caught::expect_answer(|| sdp.whep(offer));
    caught::expect_answer(|| sdp.whip(offer));
});
