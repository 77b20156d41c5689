//! FFmpeg's `-progress` and log output: `pixelpass::fuzzing::ffmpeg_output`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pixelpass::fuzzing::ffmpeg_output(data));
