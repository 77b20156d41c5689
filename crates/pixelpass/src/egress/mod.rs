//! Viewer paths: each takes a lease from the supervisor and a subscriber from the hub.

pub mod hls;
pub mod http_fit;
pub(crate) mod http_ts;
pub mod publish;
pub mod whep;
