//! The stream URL of the load generator (loopback only). Its response
//! heads are parsed by the test kit's HTTP client
//! ([`pixelpass_testkit::client::http::raw::parse_head`]).

use std::net::SocketAddr;

use anyhow::{bail, Context};

/// `http://127.0.0.1:PORT/path` → (address, path). Loopback addresses only:
/// this is a load generator, it must not point at someone else's host.
pub fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("the URL must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{authority:?} is not IP:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "the load generator only connects to loopback addresses, not {}",
            addr.ip()
        );
    }
    Ok((addr, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_loopback_only() {
        let (addr, path) = parse_url("http://127.0.0.1:8080/abc/stream.ts").unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(path, "/abc/stream.ts");
        assert_eq!(parse_url("http://[::1]:9").unwrap().1, "/");
        assert!(parse_url("http://10.0.0.1:80/x").is_err());
        assert!(parse_url("https://127.0.0.1:80/x").is_err());
        assert!(
            parse_url("http://localhost:80/x").is_err(),
            "names are not resolved"
        );
    }
}
