//! The HTTP server shared by `host` and `serve`: the accept loop with its
//! limits ([`listener`]), the routes, `serve`'s JSON API and metrics, and the
//! player page ([`player`]).

pub mod api;
pub(crate) mod listener;
mod metrics;
pub(crate) mod player;
mod routes;
pub mod tls;

pub use listener::{bind, serve, serve_tls, Limits};
pub use routes::{router, router_with, serve_router};
pub use tls::{Tls, TlsArgs};
