//! A first look at an offer (WHEP viewer or WHIP publisher), for error
//! answers that say what is wrong (`422` with one line) before str0m
//! negotiates it.

/// One m-section of an offer, as far as the checks need it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: String,
    pub rejected: bool,
    pub mid: Option<String>,
    /// (payload type, encoding name upper-cased, fmtp) of each `a=rtpmap`.
    pub codecs: Vec<(u8, String, String)>,
}

/// The m-sections of an SDP, in order.
pub fn sections(sdp: &str) -> Vec<MediaSection> {
    let mut out: Vec<MediaSection> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut it = m.split_whitespace();
            let kind = it.next().unwrap_or_default().to_ascii_lowercase();
            let rejected = it.next() == Some("0");
            out.push(MediaSection {
                kind,
                rejected,
                mid: None,
                codecs: Vec::new(),
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            cur.mid = Some(mid.trim().to_owned());
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let mut it = map.split_whitespace();
            let pt = it.next().and_then(|p| p.parse::<u8>().ok());
            let name = it
                .next()
                .and_then(|n| n.split('/').next())
                .map(str::to_ascii_uppercase);
            if let (Some(pt), Some(name)) = (pt, name) {
                cur.codecs.push((pt, name, String::new()));
            }
        } else if let Some(fmtp) = line.strip_prefix("a=fmtp:") {
            let (pt, params) = fmtp.split_once(' ').unwrap_or((fmtp, ""));
            if let Ok(pt) = pt.parse::<u8>() {
                if let Some(c) = cur.codecs.iter_mut().find(|c| c.0 == pt) {
                    c.2 = params.trim().to_owned();
                }
            }
        }
    }
    out
}

/// Why this offer cannot be served (one line), or `Ok`.
pub fn check(sdp: &str) -> Result<(), String> {
    let secs = sections(sdp);
    let video: Vec<&MediaSection> = secs
        .iter()
        .filter(|s| s.kind == "video" && !s.rejected)
        .collect();
    if video.is_empty() {
        return Err("the offer has no video (m=video): this server carries H.264 video".into());
    }
    let h264: Vec<&(u8, String, String)> = video
        .iter()
        .flat_map(|s| s.codecs.iter())
        .filter(|c| c.1 == "H264")
        .collect();
    if h264.is_empty() {
        return Err("the offer has no H.264 (this server carries H.264 only)".into());
    }
    if !h264
        .iter()
        .any(|c| c.2.to_ascii_lowercase().contains("packetization-mode=1"))
    {
        return Err(
            "the offer's H.264 lacks packetization-mode=1 (this server carries FU-A/STAP-A)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn reads_sections_and_codecs() {
        let s = sections(CHROME_LIKE);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].kind.as_str(), s[0].mid.as_deref()),
            ("audio", Some("0"))
        );
        assert_eq!(
            s[0].codecs,
            vec![(111, "OPUS".into(), "minptime=10;useinbandfec=1".into())]
        );
        assert_eq!(s[1].codecs[1].0, 102);
        assert!(check(CHROME_LIKE).is_ok());
    }

    #[test]
    fn says_what_is_missing() {
        let no_video = CHROME_LIKE.split("m=video").next().unwrap();
        assert!(check(no_video).unwrap_err().contains("no video"));
        let vp8_only = CHROME_LIKE.replace("a=rtpmap:102 H264/90000\r\n", "");
        assert!(check(&vp8_only).unwrap_err().contains("no H.264"));
        let mode0 = CHROME_LIKE.replace("packetization-mode=1", "packetization-mode=0");
        assert!(check(&mode0).unwrap_err().contains("packetization-mode=1"));
        let rejected = CHROME_LIKE.replace("m=video 9", "m=video 0");
        assert!(check(&rejected).unwrap_err().contains("no video"));
    }
}
