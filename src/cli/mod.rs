//! Command line.
pub mod view;
