//! A WHEP viewer (the library's str0m client) and what it got: H.264 in
//! Annex-B and Opus packets, written out (Opus in Ogg) for ffmpeg to decode.

use std::path::Path;

use serde_json::Value;

use super::Serve;
pub use crate::client::whep::session::{drive, Got};
use crate::client::WhepClient;
use crate::crc::crc32_ogg;
use crate::prelude::{decode_errors, ffprobe_streams};

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

// ─────────────────────────────── WHEP viewing ───────────────────────────────

pub async fn whep_viewer(serve: &Serve, token: &str) -> WhepClient {
    let url = format!("http://{}/{token}/whep", serve.addr);
    WhepClient::connect(&url, LOOPBACK)
        .await
        .unwrap_or_else(|e| panic!("WHEP POST to {url}: {e}\nstderr:\n{}", serve.stderr_text()))
}

/// H.264 in Annex-B and Opus (in Ogg) both decode with ffmpeg without an error.
pub fn assert_decodes(dir: &Path, got: &Got) {
    let h264 = dir.join("whep.h264");
    std::fs::write(&h264, &got.annexb).unwrap();
    let errors = decode_errors(&h264);
    assert!(errors.is_empty(), "H.264 from WHEP: {errors}");
    let opus = dir.join("whep.opus");
    std::fs::write(&opus, ogg_opus(&got.opus)).unwrap();
    assert_eq!(
        ffprobe_streams(&opus),
        vec![("audio".to_owned(), "opus".to_owned())]
    );
    let errors = decode_errors(&opus);
    assert!(errors.is_empty(), "Opus from WHEP: {errors}");
}

/// Opus packets in an Ogg file (RFC 7845): ID header, comment header, one packet a page.
pub fn ogg_opus(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 2]);
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&[0, 0, 0]);
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&4u32.to_le_bytes());
    tags.extend_from_slice(b"test");
    tags.extend_from_slice(&0u32.to_le_bytes());
    let mut out = Vec::new();
    ogg_page(&mut out, 0x02, 0, 0, &head);
    ogg_page(&mut out, 0, 0, 1, &tags);
    let mut granule = 0u64;
    for (i, p) in packets.iter().enumerate() {
        granule += 960; // 20 ms frames (-frame_duration 20)
        let last = i + 1 == packets.len();
        ogg_page(
            &mut out,
            if last { 0x04 } else { 0 },
            granule,
            2 + i as u32,
            p,
        );
    }
    out
}

fn ogg_page(out: &mut Vec<u8>, flags: u8, granule: u64, seq: u32, packet: &[u8]) {
    let start = out.len();
    out.extend_from_slice(b"OggS");
    out.push(0);
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&7u32.to_le_bytes()); // serial
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // CRC, below
    let mut lacing = vec![255u8; packet.len() / 255];
    lacing.push((packet.len() % 255) as u8);
    out.push(lacing.len() as u8);
    out.extend_from_slice(&lacing);
    out.extend_from_slice(packet);
    let crc = crc32_ogg(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

pub fn events(report: &Value) -> Vec<String> {
    report["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["what"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}
