//! The HTTP server shared by `host` and `serve`: the accept loop with its
//! limits, the registry of streams by token, and the routes.

pub mod api;
pub mod listener;
mod metrics;
mod registry;
mod routes;
pub mod streams;

pub use listener::{bind, serve, Limits};
pub use registry::{Registry, StreamEntry};
pub use routes::{router, router_with};
pub use streams::Streams;
