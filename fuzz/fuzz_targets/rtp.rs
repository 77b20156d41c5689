//! Datagrams (`[len_hi, len_lo, who, bytes…]`) through an RTP ingest leg:
//! `pixelpass::fuzzing::rtp`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pixelpass::fuzzing::rtp(data));
