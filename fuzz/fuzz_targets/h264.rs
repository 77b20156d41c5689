//! Annex B H.264 through the NAL scanner and the SPS readers:
//! `pixelpass::fuzzing::h264`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pixelpass::fuzzing::h264(data));
