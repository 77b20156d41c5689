//! What pixelpass's tests and benchmarks use to play the viewer, the
//! operator and the desktop: never part of the product.
//!
//! - [`bin`]: where the `pixelpass` and `pixelpass-bench` binaries are;
//! - [`client`]: a WHEP viewer (str0m, full ICE/DTLS/SRTP) and its session
//!   helper; the HTTP client (hyper's) and the HTTP-TS stream viewer;
//! - [`host`]: a `pixelpass host` child process;
//! - [`hls`]: an LL-HLS client (blocking reloads, parts or segments) and nginx as a caching proxy;
//! - [`serve`]: a `pixelpass serve` child process and its API;
//! - [`whep_harness`]: an in-process host with a crashable producer, for the WHEP tests;
//! - [`whip_standin`]: a stand-in WHIP relay that counts and keeps what `host --publish` sends;
//! - [`desktop`]: the headless Wayland session, Xvfb, pictures and tones;
//! - [`ts_scan`], [`access_units`]: frames and keyframes out of MPEG-TS;
//! - [`faults`]: viewers that stay through faults and note every frame's arrival;
//! - [`clock`]: decode H.264 and read the clock source's time code from each frame;
//! - [`tools`]: ffprobe/ffmpeg runners, temporary directories;
//! - [`netlab`]: an internet in network namespaces (home behind NAT, a public
//!   relay, a viewer) and running processes and the test's own code in it;
//!   [`netlab::impair`]: delay, jitter, loss and a rate cap between two of
//!   its namespaces, in user space (the kernel here has no netem);
//! - [`thin_link`]: issue 16's lab: a host, a viewer reaching it only through
//!   an impaired link and a clean one, headless Chromium sampling getStats in
//!   each, and scripted link phases;
//! - [`package`]: the .deb, a throw-away root to install it into, `systemd-analyze verify`;
//! - [`tls`]: a throw-away CA and server certificate for the HTTPS tests;
//! - [`summary`]: p50 / p95 / max of a set of measurements;
//! - [`crc`]: the CRC-32 of MPEG-TS sections and Ogg pages;
//! - [`prelude`]: the glob the integration tests import.
//!
//! Its own files: `browser/` (playwright-core scripts for headless Chromium)
//! and `session/` (the headless Wayland session script).

pub mod access_units;
pub mod bin;
pub mod client;
pub mod clock;
pub mod crc;
pub mod desktop;
pub mod faults;
pub mod hls;
pub mod host;
pub mod netlab;
pub mod package;
pub mod prelude;
pub mod serve;
pub mod summary;
pub mod thin_link;
pub mod tls;
pub mod tools;
pub mod ts_scan;
pub mod whep_harness;
pub mod whip_standin;

pub use bin::try_pixelpass as pixelpass_bin;
pub use summary::Summary;
