//! Stream tokens: unguessable (128 bits from the OS), URL-safe, compared in
//! constant time; and what keeps secrets out of logs: [`short`] for a token
//! that must be named, [`mask`] for text that may hold URLs with credentials.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A fresh 128-bit token, 22 URL-safe characters.
pub fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read the OS random source for a token: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A token given by the user must be usable in a URL path segment.
pub fn validate(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.' || *c == '~'))
    {
        return Err(format!(
            "the token has the character {c:?}; use letters, digits, '-', '_', '.', '~'"
        ));
    }
    Ok(())
}

/// Constant-time equality (the length is not secret).
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    // Every byte is looked at; black_box keeps the optimizer from ending early.
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// A token as logs may name it: its first 4 characters and `…` (the whole
/// token only if it is that short: then it is no secret worth the name).
pub fn short(token: &str) -> String {
    match token.char_indices().nth(4) {
        Some((i, _)) => format!("{}…", &token[..i]),
        None => token.to_owned(),
    }
}

/// A URL whose first path segment is a token (a viewer's page or stream
/// URL), with that segment [`short`]ened and credentials [`mask`]ed.
pub fn short_in_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let Some(slash) = url[start..].find('/').map(|i| start + i + 1) else {
        return mask(url);
    };
    let end = url[slash..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| slash + i);
    mask(&format!(
        "{}{}{}",
        &url[..slash],
        short(&url[slash..end]),
        &url[end..]
    ))
}

/// Query keys whose values are secrets.
const SECRET_KEYS: [&str; 8] = [
    "passphrase",
    "password",
    "passwd",
    "pass",
    "pwd",
    "secret",
    "token",
    "auth",
];

/// `text` with credentials hidden: the password of `scheme://user:pass@host`,
/// an RTMP URL's stream key (`rtmp://host/app/***`) and the values of secret
/// query keys (`passphrase=`, `password=`, …).
pub fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // userinfo: between "://" and the next '@' before any '/', space or quote.
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c == '?' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(amp), Some(colon)) if colon < amp => {
                out.push_str(&authority[..colon + 1]);
                out.push_str("***");
                out.push_str(&authority[amp..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
        // RTMP's stream key (the path after the application) is a credential.
        let scheme = before[..at]
            .rsplit(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or("");
        if scheme.to_ascii_lowercase().starts_with("rtmp") && rest.starts_with('/') {
            let path_end = rest
                .find(|c: char| c == '?' || c == '|' || c.is_whitespace() || c == '\'' || c == '"')
                .unwrap_or(rest.len());
            if let Some(slash) = rest[1..path_end].find('/') {
                out.push_str(&rest[..slash + 2]);
                out.push_str("***");
                rest = &rest[path_end..];
            }
        }
    }
    out.push_str(rest);
    mask_query(&out)
}

fn mask_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < text.len() {
        let starts_key = i == 0 || matches!(bytes[i - 1], b'?' | b'&' | b';');
        let key = starts_key
            .then(|| {
                SECRET_KEYS.iter().find(|k| {
                    let rest = &bytes[i..];
                    rest.len() > k.len()
                        && rest[..k.len()].eq_ignore_ascii_case(k.as_bytes())
                        && rest[k.len()] == b'='
                })
            })
            .flatten();
        if let Some(k) = key {
            out.push_str(&text[i..i + k.len() + 1]);
            out.push_str("***");
            i += k.len() + 1;
            while i < text.len() && !matches!(bytes[i], b'&' | b';' | b' ' | b'\'' | b'"') {
                i += 1;
            }
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_distinct_and_url_safe() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        validate(&a).unwrap();
    }

    #[test]
    fn matching() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
        assert!(validate("a/b").is_err());
        assert!(validate("").is_err());
    }

    #[test]
    fn a_short_token_shows_four_characters() {
        assert_eq!(short("qq8sAUbcxraPjd1MbMOWHw"), "qq8s…");
        assert_eq!(short("abc"), "abc");
        assert_eq!(
            short_in_url("http://10.0.0.1:8080/qq8sAUbcxraPjd1MbMOWHw/"),
            "http://10.0.0.1:8080/qq8s…/"
        );
        assert_eq!(
            short_in_url("https://a:b@relay.example/qq8sAUbcxraPjd1MbMOWHw"),
            "https://a:***@relay.example/qq8s…"
        );
        assert_eq!(short_in_url("http://h"), "http://h");
    }

    #[test]
    fn credentials_are_masked_in_urls_and_queries() {
        assert_eq!(
            mask("rtmp://user:s3cret@example.org:1935/live/key"),
            "rtmp://user:***@example.org:1935/live/***"
        );
        assert_eq!(
            mask("from 'rtmp://127.0.0.1:1935/live/k3y/x?a=1': Input/output error"),
            "from 'rtmp://127.0.0.1:1935/live/***?a=1': Input/output error"
        );
        assert_eq!(mask("rtmp://h/app"), "rtmp://h/app", "no key in it");
        assert_eq!(
            mask("srt://0.0.0.0:9000?mode=listener&passphrase=abcdefghij&latency=200"),
            "srt://0.0.0.0:9000?mode=listener&passphrase=***&latency=200"
        );
        assert_eq!(
            mask("Input #0, flv, from 'rtmp://a:b@h/x?token=T1&Password=P2':"),
            "Input #0, flv, from 'rtmp://a:***@h/x?token=***&Password=***':"
        );
        // Nothing secret: unchanged (a port is not a password; no userinfo).
        for plain in [
            "rtsp://cam:554/stream",
            "-i",
            "http://h/a?passes=1",
            "user@host",
            "é://x",
            "?éé=1&passé",
        ] {
            assert_eq!(mask(plain), plain);
        }
    }
}
