//! MPEG-TS bytes (any sync, any split) through the framer, the chunker and
//! a hub's keyframe marks: `pixelpass::fuzzing::ts`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pixelpass::fuzzing::ts(data));
