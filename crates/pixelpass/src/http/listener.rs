//! The HTTP/1.1 accept loop with the limits every connection gets: a header
//! read timeout, a header size limit (hyper answers 431), a write timeout that
//! frees the slot of a viewer that vanished without FIN, and a bounded kernel
//! send buffer so a slow viewer's backlog stays small.

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;

use super::tls::Tls;

#[derive(Clone, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub write_timeout: Duration,
    /// SO_SNDBUF for accepted sockets (the kernel doubles it); `None` keeps the default.
    pub send_buffer: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            write_timeout: Duration::from_secs(10),
            send_buffer: Some(256 * 1024),
        }
    }
}

/// Bind `addr`, with an error that says what to do when the port is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {addr}: the port is taken (another pixelpass?); choose another with --listen {}:PORT",
            addr.ip()
        ),
        Err(e) => anyhow::bail!("cannot listen on {addr}: {e}"),
    }
}

/// Serve `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    serve_tls(listener, router, limits, None, shutdown).await
}

/// [`serve`], speaking HTTPS when `tls` is given (the handshake must finish
/// within the header timeout).
pub async fn serve_tls(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    tls: Option<Tls>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        if *shutdown.borrow() {
            return;
        }
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            tls.clone(),
            shutdown.clone(),
        ));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: Limits,
    tls: Option<Tls>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    if let Some(size) = limits.send_buffer {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(size);
    }
    let mut io = TimeoutStream::new(stream);
    io.set_write_timeout(Some(limits.write_timeout));
    let io = Box::pin(io);
    match tls {
        None => http1(TokioIo::new(io), peer, router, &limits, &mut shutdown).await,
        Some(tls) => {
            let handshake = tls.acceptor.accept(io);
            match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(io)) => http1(TokioIo::new(io), peer, router, &limits, &mut shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http1<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Handlers that count clients by address (HLS) find it in the request.
    let client = crate::egress::hls::ClientAddr(peer.ip());
    let router = tower::ServiceExt::map_request(
        router,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(client);
            req
        },
    );
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
        _ = shutdown.changed() => {}
    }
}
