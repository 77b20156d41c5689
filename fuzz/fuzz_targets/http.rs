//! Requests (`METHOD TARGET\nName: value\n…\n\nbody`) to `serve`'s whole
//! router, as a tower service: `pixelpass::fuzzing::Http`. No FFmpeg may run:
//! PIXELPASS_FFMPEG is pointed at a path that does not exist.
//!
//! A panic inside str0m (a WHEP or WHIP offer) is caught by the server and
//! answered `400`; see `caught.rs`.
#![no_main]

use std::sync::OnceLock;

use pixelpass::fuzzing::Http;

mod caught;

static HTTP: OnceLock<Http> = OnceLock::new();

fn init() {
    // SAFETY: before any other thread of this process exists.
    unsafe { std::env::set_var("PIXELPASS_FFMPEG", "/nonexistent/pixelpass-fuzz/ffmpeg") };
    caught::install();
}

libfuzzer_sys::fuzz_target!(init: init(), |data: &[u8]| {
    let http = HTTP.get_or_init(|| match Http::new() {
        Ok(h) => h,
        Err(e) => panic!("cannot set up the router: {e:#}"),
    });
    if let Some(status) = caught::expect_answer(|| http.request(data)) {
        assert!(!status.is_server_error() || status.as_u16() == 503, "{status} for {:?}", String::from_utf8_lossy(data));
    }
});
