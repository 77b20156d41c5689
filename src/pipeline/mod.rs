//! GStreamer graphs (filled in by the pipeline work).
