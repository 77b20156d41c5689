//! The HTTP/1.1 accept loop with the limits every connection gets: a header
//! read timeout, a header size limit (hyper answers 431), a write timeout that
//! frees the slot of a viewer that vanished without FIN, and a bounded kernel
//! send buffer so a slow viewer's backlog stays small; and a connection limit
//! ([`super::admission`]) that sheds idle connections first and refuses the
//! rest with a short `503`, its storms said once per interval ([`super::storm`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;

use super::admission::{Admission, Ticket};
use super::fds;
use super::storm::{Storm, STORM_INTERVAL};
use super::tls::Tls;

#[derive(Clone, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub write_timeout: Duration,
    /// SO_SNDBUF for accepted sockets (the kernel doubles it); `None` keeps the default.
    pub send_buffer: Option<usize>,
    /// Open connections at most (`--max-connections`); `None`: derived from
    /// the open-file limit ([`fds::default_max_connections`]).
    pub max_connections: Option<usize>,
}

/// `--max-connections` and the header timeout, for `host` and `serve` alike.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Open HTTP connections at most. Near it, connections that have not sent
    /// a request yet are closed first; when all are requests (viewers, API),
    /// a new one gets `503 too many connections`. Default: the open-file
    /// limit (raised to its hard limit at start) less a reserve of an eighth
    /// (64–1024), at most 65536.
    #[arg(long = "max-connections", value_name = "N", value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    pub max_connections: Option<u64>,
    /// Seconds a connection may take to send its request headers (and a
    /// TLS handshake). Hidden: the tests shorten it.
    #[arg(long = "header-timeout", value_name = "SECS", hide = true, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub header_timeout: u64,
}

impl Default for ConnArgs {
    fn default() -> Self {
        Self {
            max_connections: None,
            header_timeout: 10,
        }
    }
}

impl ConnArgs {
    /// The listener's limits: these flags over `config_max` (serve's
    /// `max_connections`) over the default.
    pub fn limits(&self, config_max: Option<usize>) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(self.header_timeout),
            max_connections: self
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .or(config_max),
            ..Limits::default()
        }
    }
}

impl Limits {
    /// The connection limit in force: the one given, else the default for
    /// this process's open-file limit.
    pub fn connection_limit(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| fds::default_max_connections(fds::current_soft()))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            write_timeout: Duration::from_secs(10),
            send_buffer: Some(256 * 1024),
            max_connections: None,
        }
    }
}

/// Connections the kernel queues for `accept` (it caps this at
/// `net.core.somaxconn`): a burst of connections (a flood, or many viewers
/// at once) must not overflow a short queue, or the kernel drops their SYNs
/// and every client waits a second to retry, viewers among them.
const LISTEN_BACKLOG: i32 = 4096;

/// Bind `addr`, with an error that says what to do when the port is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let taken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
    let fail = |e: std::io::Error| {
        if taken(&e) {
            anyhow::anyhow!(
                "cannot listen on {addr}: the port is taken (another pixelpass?); choose another with --listen {}:PORT",
                addr.ip()
            )
        } else {
            anyhow::anyhow!("cannot listen on {addr}: {e}")
        }
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(fail)?;
    // As std's and tokio's bind do: a restarted server can take its port at once.
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)?;
    TcpListener::from_std(socket.into()).map_err(fail)
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
    let admission = Admission::new(limits.connection_limit());
    tracing::debug!(
        "HTTP: at most {} connections, {} of them without a request yet",
        admission.max(),
        admission.idle_cap()
    );
    let mut storms = Storms::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Shed connections still hold their descriptors until their tasks
        // run: wait for them rather than accept past the limit.
        for _ in 0..1000 {
            if !admission.must_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    storms.accept_failed(&e, &admission);
                    // Out of descriptors: free one held by a connection that
                    // has not asked for anything, then try again at once;
                    // otherwise back off briefly instead of spinning.
                    if !(is_out_of_fds(&e) && admission.shed_oldest()) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = tick.tick() => {
                storms.flush(Instant::now());
                continue;
            }
            _ = shutdown.changed() => return,
        };
        if *shutdown.borrow() {
            return;
        }
        let verdict = admission.admit();
        if verdict.shed > 0 {
            storms.shed(verdict.shed, &admission);
        }
        let Some(ticket) = verdict.ticket else {
            storms.refused(&admission);
            refuse(stream, tls.is_some(), admission.max());
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            tls.clone(),
            shutdown.clone(),
            ticket,
        ));
    }
}

fn is_out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Over the limit with every connection a request: a short `503` (plain HTTP
/// only; HTTPS just closes) and the socket is closed. Never waits.
fn refuse(stream: TcpStream, tls: bool, max: usize) {
    if !tls {
        let body = format!("too many connections ({max}/{max}): try again later\n");
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.try_write(head.as_bytes());
    }
    drop(stream);
}

/// The listener's storms, each said at most once per [`STORM_INTERVAL`].
struct Storms {
    accept: Storm,
    shed: Storm,
    refused: Storm,
}

impl Default for Storms {
    fn default() -> Self {
        Self {
            accept: Storm::new(STORM_INTERVAL),
            shed: Storm::new(STORM_INTERVAL),
            refused: Storm::new(STORM_INTERVAL),
        }
    }
}

impl Storms {
    fn accept_failed(&mut self, e: &std::io::Error, a: &Admission) {
        let (open, _) = a.counts();
        let hint = if is_out_of_fds(e) {
            format!(
                " (out of file descriptors with {open} connections open: raise the open-file limit or lower --max-connections, now {})",
                a.max()
            )
        } else {
            String::new()
        };
        if let Some(l) = self
            .accept
            .event(Instant::now(), format!("accept failed: {e}{hint}"))
        {
            tracing::warn!("{l}");
        }
    }

    fn shed(&mut self, n: usize, a: &Admission) {
        let msg = format!(
            "closed idle connections that sent no request, to make room (at most {} of {} connections may be idle)",
            a.idle_cap(),
            a.max()
        );
        for _ in 0..n {
            if let Some(l) = self.shed.event(Instant::now(), msg.clone()) {
                tracing::warn!("{l}");
            }
        }
    }

    fn refused(&mut self, a: &Admission) {
        let msg = format!(
            "refused a connection: {} connections open, all of them requests (--max-connections)",
            a.max()
        );
        if let Some(l) = self.refused.event(Instant::now(), msg) {
            tracing::warn!("{l}");
        }
    }

    fn flush(&mut self, now: Instant) {
        for s in [&mut self.accept, &mut self.shed, &mut self.refused] {
            if let Some(l) = s.flush(now) {
                tracing::warn!("{l}");
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: Limits,
    tls: Option<Tls>,
    mut shutdown: watch::Receiver<bool>,
    ticket: Ticket,
) {
    let ticket = Arc::new(ticket);
    let slot = ticket.slot.clone();
    let serve = serve_connection(stream, peer, router, &limits, tls, &mut shutdown, ticket);
    tokio::select! {
        _ = serve => {}
        // Shed to make room: dropping the connection closes its socket.
        _ = slot.shed.notified() => tracing::debug!(%peer, "closed: idle, to make room"),
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: &Limits,
    tls: Option<Tls>,
    shutdown: &mut watch::Receiver<bool>,
    ticket: Arc<Ticket>,
) {
    // The first request head makes the connection a request: no longer
    // sheddable. Handlers that count clients by address (HLS) find it in
    // the request.
    let client = crate::egress::hls::ClientAddr(peer.ip());
    let service = TowerToHyperService::new(tower::ServiceExt::map_request(
        router,
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            ticket.active();
            req.extensions_mut().insert(client);
            req
        },
    ));
    let _ = stream.set_nodelay(true);
    if let Some(size) = limits.send_buffer {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(size);
    }
    let mut io = TimeoutStream::new(stream);
    io.set_write_timeout(Some(limits.write_timeout));
    let io = Box::pin(io);
    match tls {
        None => http1(TokioIo::new(io), peer, service, limits, shutdown).await,
        Some(tls) => {
            let handshake = tls.acceptor.accept(io);
            match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(io)) => http1(TokioIo::new(io), peer, service, limits, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http1<I, S>(
    io: I,
    peer: SocketAddr,
    service: S,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
