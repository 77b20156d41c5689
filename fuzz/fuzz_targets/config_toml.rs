//! `serve`'s config file: `pixelpass::fuzzing::serve_toml`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pixelpass::fuzzing::serve_toml(data));
