//! The HTTP server shared by `host` and `serve`: the accept loop with its
//! limits, the registry of streams by token, and the routes.

pub mod listener;
mod registry;
mod routes;

pub use listener::{bind, serve, Limits};
pub use registry::{Registry, StreamEntry};
pub use routes::{router, router_with};
