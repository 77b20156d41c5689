//! The API's JSON stream config: `pixelpass::fuzzing::stream_json`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pixelpass::fuzzing::stream_json(data));
