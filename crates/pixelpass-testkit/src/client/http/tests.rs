use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

#[test]
fn urls_and_locations() {
    let u = Url::parse("http://127.0.0.1:8860/tok/whep").unwrap();
    assert_eq!(
        (u.authority.as_str(), u.path.as_str()),
        ("127.0.0.1:8860", "/tok/whep")
    );
    assert_eq!(
        Url::parse("http://example.org").unwrap().authority,
        "example.org:80"
    );
    assert_eq!(Url::parse("http://[::1]:9/x").unwrap().authority, "[::1]:9");
    assert_eq!(Url::parse("http://[::1]/x").unwrap().authority, "[::1]:80");
    assert!(Url::parse("https://x/").is_err());
    assert!(Url::parse("http:///x").is_err());
    assert_eq!(
        u.join("/tok/whep/abc").unwrap().to_string(),
        "http://127.0.0.1:8860/tok/whep/abc"
    );
    assert_eq!(u.join("whep/abc").unwrap().path, "/tok/whep/abc");
    assert_eq!(u.join("http://h:1/r").unwrap().authority, "h:1");
}

/// A server that answers one connection with `pieces`, a pause between
/// each (none: it keeps the connection 2 s and says nothing), and hands
/// back the request head it got.
async fn serve_once(pieces: Vec<&'static [u8]>) -> (Url, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before its request head");
            req.extend_from_slice(&buf[..n]);
        }
        let silent = pieces.is_empty();
        for p in pieces {
            s.write_all(p).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if silent {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        String::from_utf8_lossy(&req).into_owned()
    });
    (Url::at(addr, "/t/whep"), task)
}

/// `method` without headers or body, 5 s at most.
async fn plain(url: &Url, method: &str) -> anyhow::Result<Response> {
    request(url, method, &[], b"", Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_post_gets_its_length_and_host_and_reads_a_split_response() {
    let (url, server) = serve_once(vec![
        b"HTTP/1.1 201 Created\r\nLocation: /t/whep/1\r\nContent-Le",
        b"ngth: 5\r\n\r\nv=",
        b"0\r\n",
    ])
    .await;
    let t = Duration::from_secs(5);
    let r = request(
        &url,
        "POST",
        &[("Content-Type", "application/sdp")],
        b"offer",
        t,
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status, r.header("Location"), r.text().as_str()),
        (201, Some("/t/whep/1"), "v=0\r\n")
    );
    let req = server.await.unwrap().to_ascii_lowercase();
    assert!(req.starts_with("post /t/whep http/1.1\r\n"), "{req}");
    for h in [
        format!("host: {}", url.authority),
        "content-length: 5".into(),
        "content-type: application/sdp".into(),
        "connection: close".into(),
    ] {
        assert!(req.contains(&h), "{h:?} missing from {req}");
    }
}

#[tokio::test]
async fn chunked_and_close_delimited_bodies_are_undone_in_any_split() {
    let (url, _server) = serve_once(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWi",
        b"ki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r",
        b"\n0\r\nX-T: 1\r\n\r\n",
    ])
    .await;
    let r = plain(&url, "GET").await.unwrap();
    assert_eq!(r.text(), "Wikipedia in \r\n\r\nchunks.");

    let (url, _server) = serve_once(vec![b"HTTP/1.1 200 OK\r\n\r\nto ", b"the end"]).await;
    let r = plain(&url, "GET").await.unwrap();
    assert_eq!(r.text(), "to the end");

    let (url, _server) = serve_once(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"]).await;
    let r = plain(&url, "HEAD").await.unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
}

#[tokio::test]
async fn broken_and_silent_servers_are_errors_in_time() {
    let (url, _server) = serve_once(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc"]).await;
    let e = plain(&url, "GET").await;
    assert!(e.is_err(), "a body cut short: {e:?}");

    let (url, _server) = serve_once(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]).await;
    assert!(plain(&url, "GET").await.is_err());

    let (url, _server) = serve_once(vec![]).await; // keeps the connection, says nothing
    let t0 = Instant::now();
    let e = request(&url, "GET", &[], b"", Duration::from_millis(300)).await;
    let e = e.expect_err("no answer is an error");
    assert!(e.to_string().contains("no answer within 300 ms"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_stream_yields_its_body_as_it_comes() {
    let (url, _server) = serve_once(vec![
        b"HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\ntransfer-encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\n",
        b"2\r\nde\r\n",
    ])
    .await;
    let tcp = connect(&url.authority).await.unwrap();
    let mut s = Stream::send(tcp, &url.authority, "GET", &url.path, &[], b"")
        .await
        .unwrap();
    assert_eq!(
        (s.status, s.header("Content-Type")),
        (200, Some("video/mp2t"))
    );
    let mut got = Vec::new();
    while got.len() < 5 {
        let until = Instant::now() + Duration::from_secs(5);
        let piece = s
            .next_until(until)
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&piece);
    }
    assert_eq!(got, b"abcde");
    // Nothing more comes (the server went away without the last chunk).
    let until = Instant::now() + Duration::from_millis(500);
    assert!(matches!(s.next_until(until).await, None | Some(Err(_))));
}

/// The blocking face from inside an async test (as tests/serve.rs uses
/// it): it blocks that thread instead of refusing to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_face_works_inside_a_runtime() {
    let (url, server) = serve_once(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]).await;
    let addr: SocketAddr = url.authority.parse().unwrap();
    let r = blocking::request_with(addr, "PUT", "/x", &[("X-A", "1")], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let req = server.await.unwrap().to_ascii_lowercase();
    assert!(req.contains("content-length: 0\r\n"), "{req}");
    assert!(req.contains("x-a: 1\r\n"), "{req}");

    let (url, _server) = serve_once(vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\n",
    ])
    .await;
    let addr: SocketAddr = url.authority.parse().unwrap();
    let mut v = blocking::Viewer::open(addr, "/s");
    assert_eq!(v.status, 200);
    v.read_for(Duration::from_millis(500));
    assert_eq!(v.body, b"abc");
    assert!(v.eof, "the server went away mid-body");
    drop(v); // and the viewer's runtime ends here, inside this one
}
