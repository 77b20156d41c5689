//! The HTTP server shared by `host` and `serve`: the accept loop with its
//! limits ([`listener`]; the connection limit and idle shedding in
//! `admission`, once-per-interval logging of storms in `storm`, the
//! open-file limit in [`fds`]), the routes, `serve`'s JSON API and metrics, and the
//! player page ([`player`]).

pub(crate) mod admission;
pub mod api;
pub mod fds;
pub(crate) mod listener;
mod metrics;
pub(crate) mod player;
mod routes;
mod storm;
pub mod tls;

pub use listener::{bind, serve, serve_tls, ConnArgs, Limits};
pub use routes::{router, router_with, serve_router};
pub use tls::{Tls, TlsArgs};
