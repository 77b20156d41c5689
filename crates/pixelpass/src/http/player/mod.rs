//! The embedded player page: one self-contained HTML file with plain JS (no
//! build step), served at `/{token}/`. It talks WHEP to its own origin only,
//! and its Content-Security-Policy says so.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

pub const PLAYER_HTML: &str = include_str!("player.html");

/// Scripts and styles are inline; media and requests stay on this origin.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'";

pub fn player() -> Response {
    let mut resp = PLAYER_HTML.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_talks_whep_to_its_own_origin_only() {
        assert!(PLAYER_HTML.contains(r#"new URL("whep", location.href)"#));
        assert!(PLAYER_HTML.contains("application/sdp"));
        // No absolute URL to anywhere else.
        for bad in ["http://", "https://", "//cdn", "<script src"] {
            assert!(!PLAYER_HTML.contains(bad), "page must not reference {bad}");
        }
        // The page shows the same mpv command as the banner and `pixelpass view`.
        let mpv = crate::view::shell_command(crate::view::Player::Mpv, "URL");
        let opts = mpv.trim_end_matches("URL");
        assert!(
            PLAYER_HTML.contains(&format!("\"{opts}\" + tsUrl")),
            "player page mpv command differs from: {opts}"
        );
        let resp = player();
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'"));
    }
}
