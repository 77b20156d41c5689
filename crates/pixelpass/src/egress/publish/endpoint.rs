//! WHIP URLs and headers, pure: the endpoint given on the command line, the
//! resource URL a `Location` names (relative or absolute, resolved against
//! the endpoint as RFC 3986 says), and the `Link` headers of an answer
//! (RFC 8288: the relay's player page, its STUN/TURN servers).

use std::fmt;

/// An `http://` or `https://` URL, split for connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    /// The host as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?} is not an http:// or https:// URL (e.g. https://relay.example/whip/desk)"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let path = path.split('#').next().unwrap_or("/").to_owned();
        if authority.contains('@') {
            return Err(format!(
                "{url:?}: user:password in the URL is not supported; give the token with --publish-token"
            ));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: an IPv6 address without its closing ']'"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(url, p)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{url:?}: unexpected {after:?} after the host")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(url, p)?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Self {
            https,
            host,
            port,
            path,
        })
    }

    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }

    /// `host[:port]` as the `Host` header wants it.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL `location` names, relative to this one (RFC 3986 § 5.2).
    pub fn join(&self, location: &str) -> Result<Self, String> {
        let location = location.trim();
        if location.starts_with("http://") || location.starts_with("https://") {
            return Self::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            let scheme = if self.https { "https" } else { "http" };
            return Self::parse(&format!("{scheme}://{rest}"));
        }
        if location.is_empty() {
            return Err("an empty Location".into());
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else if location.starts_with('?') {
            let base = self.path.split('?').next().unwrap_or("/");
            format!("{base}{location}")
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Ok(Self {
            path: remove_dot_segments(&path),
            ..self.clone()
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

fn parse_port(url: &str, p: &str) -> Result<u16, String> {
    p.parse()
        .map_err(|_| format!("{url:?}: {p:?} is not a port number"))
}

/// `a/b/../c/./d` → `a/c/d` (the query is left alone).
fn remove_dot_segments(path: &str) -> String {
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = p.split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *s {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut joined = out.join("/");
    if !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    match query {
        Some(q) => format!("{joined}?{q}"),
        None => joined,
    }
}

/// One link of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub target: String,
    /// `rel`, lower case (may hold several, space-separated).
    pub rel: String,
    pub media_type: Option<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl Link {
    pub fn has_rel(&self, rel: &str) -> bool {
        self.rel.split_whitespace().any(|r| r == rel)
    }

    /// `rel="alternate"; type="text/html"`: a page where viewers watch.
    pub fn is_player_page(&self) -> bool {
        self.has_rel("alternate")
            && self
                .media_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("text/html"))
    }
}

/// Every link in these `Link` header values (`<url>; k=v; k="v", <url>…`).
pub fn parse_links<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Link> {
    let mut links = Vec::new();
    for value in values {
        for part in split_outside_quotes(value, ',') {
            let part = part.trim();
            let Some(rest) = part.strip_prefix('<') else {
                continue;
            };
            let Some((target, params)) = rest.split_once('>') else {
                continue;
            };
            let mut link = Link {
                target: target.trim().to_owned(),
                ..Link::default()
            };
            for param in split_outside_quotes(params, ';') {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim().to_ascii_lowercase().as_str() {
                    "rel" => link.rel = v.to_ascii_lowercase(),
                    "type" => link.media_type = Some(v),
                    "username" => link.username = Some(v),
                    "credential" => link.credential = Some(v),
                    _ => {}
                }
            }
            links.push(link);
        }
    }
    links
}

/// `s` split at `sep`, except inside `"…"` or `<…>`.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut angle) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !quoted && !angle => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_default_ports() {
        let e = Endpoint::parse("https://relay.example/whip/desk").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port, e.path.as_str()),
            (true, "relay.example", 443, "/whip/desk")
        );
        assert_eq!(e.to_string(), "https://relay.example/whip/desk");
        let e = Endpoint::parse("http://[::1]:8080?x=1").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 8080, "/?x=1")
        );
        assert_eq!(e.authority(), "[::1]:8080");
        assert!(Endpoint::parse("rtmp://x/y").is_err());
        assert!(Endpoint::parse("http://:80/").is_err());
        assert!(Endpoint::parse("http://u:p@x/")
            .unwrap_err()
            .contains("--publish-token"));
        assert!(Endpoint::parse("http://x:99999/").is_err());
    }

    #[test]
    fn a_location_resolves_against_the_endpoint() {
        let e = Endpoint::parse("http://127.0.0.1:9000/whip/desk?x=1").unwrap();
        let j = |l: &str| e.join(l).unwrap().to_string();
        assert_eq!(j("/whip/desk/abc"), "http://127.0.0.1:9000/whip/desk/abc");
        assert_eq!(j("desk/abc"), "http://127.0.0.1:9000/whip/desk/abc");
        assert_eq!(j("abc"), "http://127.0.0.1:9000/whip/abc");
        assert_eq!(j("../res/1"), "http://127.0.0.1:9000/res/1");
        assert_eq!(j("https://other:444/r/1"), "https://other:444/r/1");
        assert_eq!(j("//other/r"), "http://other/r");
        assert!(e.join(" ").is_err());
    }

    #[test]
    fn link_headers_give_the_player_page_and_ice_servers() {
        let links = parse_links([
            r#"<https://relay.example/TOKEN/>; rel="alternate"; type="text/html""#,
            r#"<stun:stun.example:3478>; rel="ice-server", <turn:turn.example?transport=udp>; rel="ice-server"; username="u;1"; credential="p,w"; credential-type="password""#,
        ]);
        assert_eq!(links.len(), 3, "{links:?}");
        assert!(links[0].is_player_page());
        assert_eq!(links[0].target, "https://relay.example/TOKEN/");
        assert!(links[1].has_rel("ice-server") && !links[1].is_player_page());
        assert_eq!(links[2].target, "turn:turn.example?transport=udp");
        assert_eq!(links[2].username.as_deref(), Some("u;1"));
        assert_eq!(links[2].credential.as_deref(), Some("p,w"));
        assert!(parse_links(["garbage", ""]).is_empty());
        let other = parse_links([r#"<https://x/>; rel="alternate"; type="application/json""#]);
        assert!(!other[0].is_player_page());
    }
}
