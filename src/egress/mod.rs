//! Viewer paths.
