//! The harness of `tests/desktop.rs`, one concern per file: [`session`] the
//! headless Wayland session (`headless-session.sh`, with
//! `xdpw-shm-fallback.patch` for xdg-desktop-portal-wlr) from Rust,
//! [`capture`] a host on the portal and an HTTP-TS viewer of it,
//! [`pictures`] decoded frames checked against the session's screen,
//! [`whep`] WHEP viewers collecting video or Opus, [`audio`] a tone played
//! into the default sink and found again in a track, [`x11`] Xvfb with a
//! picture on it, [`doctor`] `pixelpass doctor --json`.

pub mod audio;
pub mod capture;
pub mod doctor;
pub mod pictures;
pub mod session;
pub mod whep;
pub mod x11;
