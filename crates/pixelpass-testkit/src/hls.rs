//! LL-HLS from the client side: the playlist's lines a client acts on
//! ([`Playlist`]), a blocking-reload client that follows the live edge part
//! by part or segment by segment ([`follow`]), and nginx as a caching proxy
//! in front of an origin ([`Nginx`]: Debian's binary, its own config and
//! directories, killed by PID on drop).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::http::blocking::request;
use crate::tools::TempDir;

/// What a media playlist lists.
#[derive(Debug, Default, Clone)]
pub struct Playlist {
    /// (msn, part index, URI) of every EXT-X-PART.
    pub parts: Vec<(u64, usize, String)>,
    /// (msn, URI) of every whole segment.
    pub segments: Vec<(u64, String)>,
    /// The preload hint: (msn, part index, URI).
    pub hint: Option<(u64, usize, String)>,
    pub media_sequence: u64,
    pub program_date_times: Vec<String>,
    pub text: String,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(q) => q.split('"').next(),
        None => rest.split(',').next(),
    }
}

impl Playlist {
    pub fn parse(text: &str) -> Self {
        let mut p = Playlist {
            text: text.to_owned(),
            ..Default::default()
        };
        let mut msn = 0u64;
        let mut part = 0usize;
        let mut after_extinf = false;
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                msn = n.trim().parse().unwrap_or(0);
                p.media_sequence = msn;
            } else if let Some(d) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                p.program_date_times.push(d.to_owned());
            } else if line.starts_with("#EXT-X-PART:") {
                if let Some(uri) = attr(line, "URI") {
                    p.parts.push((msn, part, uri.to_owned()));
                }
                part += 1;
            } else if line.starts_with("#EXTINF:") {
                after_extinf = true;
            } else if after_extinf && !line.starts_with('#') && !line.is_empty() {
                p.segments.push((msn, line.to_owned()));
                msn += 1;
                part = 0;
                after_extinf = false;
            } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
                if let Some(uri) = attr(line, "URI") {
                    p.hint = Some((msn, part, uri.to_owned()));
                }
            }
        }
        p
    }
}

/// What one following client saw.
#[derive(Debug, Default, Clone)]
pub struct Followed {
    pub parts: usize,
    pub segments: usize,
    pub playlists: usize,
    /// Requests answered with anything but 200 (status, URI).
    pub failures: Vec<(u16, String)>,
    /// Media that did not start with an ISO-BMFF `moof`.
    pub not_fmp4: usize,
}

/// Follow the live edge of `base` (`/{token}/hls/`) at `addr` until
/// `deadline`: by blocking reloads and each new part (`parts`), or by plain
/// reloads and each new segment (`!parts`: as a non-LL player does).
pub fn follow(addr: SocketAddr, base: &str, parts: bool, deadline: Instant) -> Followed {
    let mut f = Followed::default();
    let get = |uri: &str, f: &mut Followed| {
        let r = request(addr, "GET", &format!("{base}{uri}"));
        if r.status != 200 {
            f.failures.push((r.status, uri.to_owned()));
        }
        r
    };
    let first = get("index.m3u8", &mut f);
    f.playlists += 1;
    let mut pl = Playlist::parse(&first.text());
    let mut last_segment = pl.segments.last().map(|s| s.0);
    while Instant::now() < deadline {
        if parts {
            let Some((msn, part, uri)) = pl.hint.clone() else {
                break;
            };
            let r = get(
                &format!("index.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
                &mut f,
            );
            f.playlists += 1;
            if r.status != 200 {
                std::thread::sleep(Duration::from_millis(200));
                pl = Playlist::parse(&get("index.m3u8", &mut f).text());
                continue;
            }
            pl = Playlist::parse(&r.text());
            if pl.parts.iter().any(|p| p.2 == uri) {
                let m = get(&uri, &mut f);
                f.parts += 1;
                f.not_fmp4 += usize::from(m.status == 200 && m.body.get(4..8) != Some(b"moof"));
            }
        } else {
            std::thread::sleep(Duration::from_millis(500));
            let r = get("index.m3u8", &mut f);
            f.playlists += 1;
            pl = Playlist::parse(&r.text());
            for (msn, uri) in pl.segments.clone() {
                if last_segment.is_some_and(|l| msn <= l) {
                    continue;
                }
                last_segment = Some(msn);
                let m = get(&uri, &mut f);
                f.segments += 1;
                f.not_fmp4 += usize::from(m.status == 200 && m.body.get(4..8) != Some(b"moof"));
            }
        }
    }
    f
}

/// nginx as a caching reverse proxy with request collapsing in front of `origin`.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

/// The config the README documents, with this test's paths and ports; it
/// reaches the origin from `bind` (another loopback address than the test's
/// own, so the origin can tell the cache from a direct client).
pub fn nginx_config(
    dir: &std::path::Path,
    listen: SocketAddr,
    origin: SocketAddr,
    bind: &str,
) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=hls:10m max_size=1g inactive=2m use_temp_path=off;
    server {{
        listen {listen};
        location / {{
            proxy_pass http://{origin};
            proxy_bind {bind};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hls;
            # The query is part of the key: each _HLS_msn/_HLS_part is its own object.
            proxy_cache_key $uri$is_args$args;
            # Request collapsing: one request per object goes to the origin;
            # the others wait for it (a blocking playlist waits up to 12 s).
            proxy_cache_lock on;
            proxy_cache_lock_timeout 15s;
            proxy_cache_lock_age 15s;
            proxy_read_timeout 30s;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"#
    )
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("its address")
}

impl Nginx {
    pub fn spawn(origin: SocketAddr) -> Nginx {
        let bin = PathBuf::from("/usr/sbin/nginx");
        assert!(
            bin.exists(),
            "nginx is missing: run scripts/setup.sh (it installs nginx-light)"
        );
        let dir = TempDir::new("nginx");
        let addr = free_port();
        let conf = dir.write(
            "nginx.conf",
            nginx_config(&dir.0, addr, origin, "127.0.0.2").as_bytes(),
        );
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        let n = Nginx { child, addr, dir };
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(n.addr).is_err() {
            assert!(
                Instant::now() < until,
                "nginx did not listen on {} within 10 s: {}",
                n.addr,
                n.errors()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }

    /// Lines of its access log.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
