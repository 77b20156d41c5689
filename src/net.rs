//! Interface addresses.
