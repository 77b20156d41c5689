//! Delay, jitter, loss and a rate cap between two namespaces, in user space
//! (this class of machine's kernel has no netem; `tc qdisc tbf` works for a
//! plain rate cap and needs nothing from here).
//!
//! ```text
//!  namespace A                                   namespace B
//!  dev (TUN) a_addr ──► forwarder thread ──► dev (TUN) b_addr
//!                 ◄──  (one Shaper per way)  ◄──
//! ```
//!
//! [`ImpairedLink::start`] makes a TUN device in each namespace, gives it a
//! point-to-point address with the other end as its peer, and forwards
//! between the two through a [`Shaper`] per direction: what A sends to
//! `b_addr` comes out of B's device after the A→B impairment, and back.
//! [`ImpairedLink::set`] changes a direction's settings while it runs
//! (lift a cap, three seconds of 10 % loss, …); [`ImpairedLink::stats`]
//! counts what was forwarded, lost and dropped at the queue. Dropping the
//! link stops the thread and closes both devices (the kernel deletes them).
//! Losses and jitter come from a seeded PRNG: the same seed and the same
//! packets give the same losses on every run.

mod link;
mod prng;
mod shaper;
#[cfg(test)]
mod shaper_tests;
mod tun;

pub use link::{Direction, ImpairedLink, LinkConfig};
pub use prng::SplitMix64;
pub use shaper::{BadImpairment, Impairment, Rate, Shaper, Stats, MAX_IN_FLIGHT};
