//! What to capture.
