//! `serve`'s configuration: one stream's settings ([`stream`], shared by the
//! TOML file and the JSON API) and the config file ([`file`], with errors
//! naming file, line and key through [`toml_lines`]).

pub(crate) mod file;
pub mod stream;
pub(crate) mod toml_lines;

pub use file::ServeConfig;
pub use stream::{FieldError, StreamConfig, VideoMode};
