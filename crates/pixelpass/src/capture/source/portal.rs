//! The Wayland ScreenCast portal (xdg-desktop-portal) through `ashpd`, handing
//! the PipeWire fd and node id to GStreamer's `pipewiresrc`.
//!
//! One [`PortalCapture`] per capture run: CreateSession → SelectSources
//! (monitor, or window with `--window`; cursor embedded; the saved restore
//! token; persist "until revoked") → Start → save the new restore token →
//! OpenPipeWireRemote. The capture holds its own D-Bus connection, the
//! session and the PipeWire fd until [`PortalCapture::close`]; if the process
//! dies the connection drops and the portal ends the session by itself.
//!
//! The restore token lives in `$XDG_STATE_HOME/pixelpass/` (else
//! `~/.local/state/pixelpass/`): the picker appears once, not at every lazy
//! start. Tokens are single-use (portal v4): every successful start replaces
//! the saved one.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ashpd::desktop::screencast::{CursorMode, Screencast, SelectSourcesOptions, SourceType};
use ashpd::desktop::{PersistMode, ResponseError, Session};
use ashpd::zbus;
use gstreamer as gst;

use super::VideoParams;
use crate::capture::element::{build, builder, set_bool, set_num, soft};
use crate::capture::error::PipelineError;

/// Elements of the portal source.
pub const VIDEO_ELEMENTS: &[&str] = &["pipewiresrc"];

/// The portal's well-known name on the session bus.
const DESKTOP: &str = "org.freedesktop.portal.Desktop";

/// How long a person may take at the share dialog. A waiting viewer gives up
/// after 60 s (`http_ts::START_TIMEOUT`): answer before that.
pub const DIALOG_TIMEOUT: Duration = Duration::from_secs(55);

/// How long a D-Bus call that needs no person may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the portal gave no stream. The message says what is missing or what
/// happened, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortalError {
    #[error("no D-Bus session bus ({0}): the screen-cast portal needs a desktop session")]
    NoBus(String),
    #[error(
        "no screen-cast portal on the session bus ({0}): apt-get install xdg-desktop-portal and the backend \
         for this desktop (xdg-desktop-portal-gnome, -kde or -wlr)"
    )]
    NoPortal(String),
    #[error("the screen-share dialog was cancelled")]
    Cancelled,
    #[error("the portal refused the screen share (denied, or no source could be chosen)")]
    Denied,
    #[error("no answer from the screen-share dialog within {0} s")]
    DialogTimeout(u64),
    #[error("the portal started no stream")]
    NoStream,
    #[error("this desktop's portal cannot share a single window (it offers: {0}); share the screen (without --window)")]
    NoWindowSharing(String),
    #[error("screen-cast portal: {0}")]
    Failed(String),
}

/// `--window` or not: what the picker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Monitor,
    Window,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Monitor => "monitor",
            Target::Window => "window",
        }
    }
}

/// Where the restore token of one target kind is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    /// `$XDG_STATE_HOME/pixelpass/screencast-{monitor,window}.token`
    /// (`~/.local/state` when XDG_STATE_HOME is unset or relative).
    pub fn for_target(target: Target) -> Option<Self> {
        state_dir().map(|d| {
            Self::at(
                d.join("pixelpass")
                    .join(format!("screencast-{}.token", target.label())),
            )
        })
    }

    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Option<String> {
        let s = std::fs::read_to_string(&self.path).ok()?;
        let s = s.trim();
        // A token is a short printable string (a UUID in practice).
        (!s.is_empty() && s.len() <= 512 && s.chars().all(|c| c.is_ascii_graphic()))
            .then(|| s.to_owned())
    }

    pub fn save(&self, token: &str) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Write then rename: a reader never sees half a token.
            let tmp = self.path.with_extension("token.tmp");
            std::fs::write(&tmp, format!("{token}\n"))?;
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            tracing::warn!(
                "could not save the portal restore token in {}: {e}",
                self.path.display()
            );
        }
    }

    pub fn clear(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::info!(
                "portal: forgot the saved screen selection ({})",
                self.path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove {}: {e}", self.path.display()),
        }
    }
}

/// `$XDG_STATE_HOME`, else `~/.local/state`.
pub fn state_dir() -> Option<PathBuf> {
    state_dir_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn state_dir_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(x) = xdg.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(x);
    }
    home.map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|h| h.join(".local").join("state"))
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalInfo {
    /// The ScreenCast interface version (restore tokens need ≥ 4).
    pub version: u32,
    pub monitor: bool,
    pub window: bool,
}

/// Is there a ScreenCast portal on the session bus? Quick, no dialog.
pub async fn probe() -> Result<PortalInfo, PortalError> {
    let conn = connect().await?;
    let proxy = screencast(&conn).await?;
    let types = tokio::time::timeout(CALL_TIMEOUT, proxy.available_source_types())
        .await
        .map_err(|_| PortalError::NoPortal("AvailableSourceTypes timed out".into()))?
        .map_err(|e| PortalError::NoPortal(e.to_string()))?;
    Ok(PortalInfo {
        version: proxy.version(),
        monitor: types.contains(SourceType::Monitor),
        window: types.contains(SourceType::Window),
    })
}

async fn connect() -> Result<zbus::Connection, PortalError> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
        && std::env::var_os("XDG_RUNTIME_DIR").is_none()
    {
        return Err(PortalError::NoBus(
            "DBUS_SESSION_BUS_ADDRESS is not set".into(),
        ));
    }
    bounded_connect(zbus::Connection::session()).await
}

#[cfg(test)]
async fn connect_to(address: &str) -> Result<zbus::Connection, PortalError> {
    let builder = zbus::connection::Builder::address(address)
        .map_err(|e| PortalError::NoBus(e.to_string()))?;
    bounded_connect(builder.build()).await
}

async fn bounded_connect(
    fut: impl std::future::Future<Output = zbus::Result<zbus::Connection>>,
) -> Result<zbus::Connection, PortalError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(PortalError::NoBus(e.to_string())),
        Err(_) => Err(PortalError::NoBus("connecting timed out".into())),
    }
}

/// The ScreenCast proxy, after checking that the portal is there at all
/// (ashpd would otherwise report version 1 of a portal that does not exist).
async fn screencast(conn: &zbus::Connection) -> Result<Screencast, PortalError> {
    let dbus = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| PortalError::NoBus(e.to_string()))?;
    let name =
        zbus::names::BusName::try_from(DESKTOP).map_err(|e| PortalError::Failed(e.to_string()))?;
    let owned = dbus.name_has_owner(name.clone()).await.unwrap_or(false);
    if !owned {
        let activatable = dbus
            .list_activatable_names()
            .await
            .map(|names| names.iter().any(|n| n.as_str() == DESKTOP))
            .unwrap_or(false);
        if !activatable {
            return Err(PortalError::NoPortal(format!(
                "{DESKTOP} is neither running nor activatable"
            )));
        }
    }
    match tokio::time::timeout(CALL_TIMEOUT, Screencast::with_connection(conn.clone())).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(ashpd::Error::PortalNotFound(_))) => Err(PortalError::NoPortal(
            "the portal has no ScreenCast interface (no backend for this desktop)".into(),
        )),
        Ok(Err(e)) => Err(PortalError::NoPortal(e.to_string())),
        Err(_) => Err(PortalError::NoPortal(format!("{DESKTOP} did not answer"))),
    }
}

fn classify(e: ashpd::Error) -> PortalError {
    match e {
        ashpd::Error::Response(ResponseError::Cancelled) => PortalError::Cancelled,
        ashpd::Error::Response(ResponseError::Other) => PortalError::Denied,
        ashpd::Error::PortalNotFound(i) => PortalError::NoPortal(format!("no {i} interface")),
        other => PortalError::Failed(other.to_string()),
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A started screencast: keep it alive while capturing.
pub struct PortalCapture {
    /// Watches for the desktop ending the share (see [`PortalCapture::on_closed`]).
    watch: Option<AbortOnDrop>,
    conn: zbus::Connection,
    session: Session<Screencast>,
    fd: OwnedFd,
    node_id: u32,
    size: Option<(i32, i32)>,
    /// A saved token was offered (the portal may still have shown its dialog).
    restored: bool,
}

impl std::fmt::Debug for PortalCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalCapture")
            .field("node_id", &self.node_id)
            .field("fd", &self.fd.as_raw_fd())
            .field("size", &self.size)
            .field("restored", &self.restored)
            .finish()
    }
}

/// What `pipewiresrc` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortalStream {
    pub fd: RawFd,
    pub node_id: u32,
}

impl PortalCapture {
    /// Ask the portal for a stream: with the saved token when there is one
    /// (no dialog), else the picker. A start that fails while a token was
    /// offered is retried once without it (a token the portal rejects is
    /// dropped and the dialog shown).
    pub async fn open(target: Target, store: Option<&TokenStore>) -> Result<Self, PortalError> {
        let token = store.and_then(TokenStore::load);
        match Self::attempt(target, store, token.as_deref()).await {
            Err(e @ (PortalError::Denied | PortalError::Failed(_) | PortalError::NoStream))
                if token.is_some() =>
            {
                tracing::warn!(
                    "portal: the saved screen selection did not work ({e}); asking again"
                );
                if let Some(s) = store {
                    s.clear();
                }
                Self::attempt(target, store, None).await
            }
            other => other,
        }
    }

    async fn attempt(
        target: Target,
        store: Option<&TokenStore>,
        token: Option<&str>,
    ) -> Result<Self, PortalError> {
        let conn = connect().await?;
        let proxy = screencast(&conn).await?;
        let session = call(proxy.create_session(Default::default())).await?;
        // From here on a failure closes the session (and with it any dialog).
        match Self::select_and_start(&proxy, &session, target, store, token).await {
            Ok((fd, node_id, size)) => Ok(Self {
                watch: None,
                conn,
                session,
                fd,
                node_id,
                size,
                restored: token.is_some(),
            }),
            Err(e) => {
                if let Err(close) = tokio::time::timeout(CALL_TIMEOUT, session.close())
                    .await
                    .unwrap_or(Ok(()))
                {
                    tracing::debug!("portal: closing the failed session: {close}");
                }
                Err(e)
            }
        }
    }

    async fn select_and_start(
        proxy: &Screencast,
        session: &Session<Screencast>,
        target: Target,
        store: Option<&TokenStore>,
        token: Option<&str>,
    ) -> Result<(OwnedFd, u32, Option<(i32, i32)>), PortalError> {
        let version = proxy.version();
        if target == Target::Window {
            // Asking for a kind the backend lacks fails without a word: say it here.
            if let Ok(types) = call(proxy.available_source_types()).await {
                if !types.contains(SourceType::Window) {
                    let offers: Vec<&str> = [
                        (SourceType::Monitor, "monitor"),
                        (SourceType::Virtual, "virtual"),
                    ]
                    .iter()
                    .filter(|(t, _)| types.contains(*t))
                    .map(|(_, n)| *n)
                    .collect();
                    return Err(PortalError::NoWindowSharing(if offers.is_empty() {
                        "nothing".into()
                    } else {
                        offers.join(", ")
                    }));
                }
            }
        }
        let sources = match target {
            Target::Monitor => SourceType::Monitor,
            Target::Window => SourceType::Window,
        };
        let mut options = SelectSourcesOptions::default()
            .set_cursor_mode(CursorMode::Embedded)
            .set_sources(Some(sources.into()))
            .set_multiple(false);
        // Restore tokens and persist modes came with version 4.
        if version >= 4 {
            options = options
                .set_persist_mode(PersistMode::ExplicitlyRevoked)
                .set_restore_token(token);
            if token.is_some() {
                tracing::info!("portal: offering the saved screen selection (restore token)");
            } else {
                tracing::info!("portal: asking which {} to share", target.label());
            }
        } else {
            tracing::info!("portal: ScreenCast version {version} cannot remember a selection; asking which {} to share", target.label());
        }
        call(proxy.select_sources(session, options))
            .await?
            .response()
            .map_err(classify)?;
        let started = tokio::time::timeout(
            DIALOG_TIMEOUT,
            proxy.start(session, None, Default::default()),
        )
        .await
        .map_err(|_| PortalError::DialogTimeout(DIALOG_TIMEOUT.as_secs()))?
        .map_err(classify)?;
        let streams = started.response().map_err(classify)?;
        if let Some(s) = store {
            match streams.restore_token() {
                Some(t) => s.save(t),
                // The portal will not remember this selection: nothing to offer next time.
                None if version >= 4 => s.clear(),
                None => {}
            }
        }
        let stream = streams.streams().first().ok_or(PortalError::NoStream)?;
        let node_id = stream.pipe_wire_node_id();
        let size = stream.size();
        let fd = call(proxy.open_pipe_wire_remote(session, Default::default())).await?;
        tracing::info!(node_id, ?size, "portal: screen cast started");
        Ok((fd, node_id, size))
    }

    pub fn stream(&self) -> PortalStream {
        PortalStream {
            fd: self.fd.as_raw_fd(),
            node_id: self.node_id,
        }
    }

    /// The stream's size in pixels, when the portal said.
    pub fn size(&self) -> Option<(i32, i32)> {
        self.size
    }

    pub fn restored(&self) -> bool {
        self.restored
    }

    /// When the desktop ends the share (the person pressed "stop sharing"):
    /// forget the saved selection, so the next start shows the dialog again
    /// instead of silently resuming, and call `ended`.
    pub async fn on_closed(
        &mut self,
        store: Option<TokenStore>,
        ended: impl FnOnce() + Send + 'static,
    ) {
        // Our connection holds this one session: a Session.Closed from the
        // portal on it is ours. (From the portal only: no other peer on the
        // bus can end the share by sending one.)
        let owner = match zbus::fdo::DBusProxy::new(&self.conn).await {
            Ok(dbus) => match zbus::names::BusName::try_from(DESKTOP) {
                Ok(name) => dbus.get_name_owner(name).await.ok(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        let Some(owner) = owner else {
            tracing::debug!(
                "portal: cannot tell who owns {DESKTOP}; not watching for the share's end"
            );
            return;
        };
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(owner.to_string())
            .and_then(|b| b.interface("org.freedesktop.portal.Session"))
            .and_then(|b| b.member("Closed"))
            .map(|b| b.build());
        let stream = match rule {
            Ok(rule) => zbus::MessageStream::for_match_rule(rule, &self.conn, None).await,
            Err(e) => Err(e),
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("portal: cannot watch the session's Closed signal: {e}");
                return;
            }
        };
        self.watch = Some(AbortOnDrop(tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut stream = stream;
            if let Some(Ok(_)) = stream.next().await {
                tracing::warn!("portal: the desktop ended the screen share");
                if let Some(s) = store {
                    s.clear();
                }
                ended();
            }
        })));
    }

    /// End the screencast (call once the pipeline no longer reads the fd).
    pub async fn close(self) {
        // Our own Close is not the desktop ending the share.
        drop(self.watch);
        match tokio::time::timeout(CALL_TIMEOUT, self.session.close()).await {
            Ok(Ok(())) => tracing::debug!("portal: session closed"),
            Ok(Err(e)) => tracing::debug!("portal: closing the session: {e}"),
            Err(_) => tracing::warn!("portal: closing the session timed out"),
        }
        drop(self.fd);
        drop(self.conn);
    }
}

/// A D-Bus call that needs no person: bounded in time.
async fn call<T>(
    fut: impl std::future::Future<Output = Result<T, ashpd::Error>>,
) -> Result<T, PortalError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(PortalError::Failed(format!(
            "the portal did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// `pipewiresrc` on the portal's fd and node. The screen delivers a frame
/// only when something changes: `keepalive-time` re-sends the last frame
/// after one frame interval without news (copied: `always-copy`, so PipeWire
/// gets its buffers back at once), and the graph's videorate fills the rest,
/// so a static screen still yields a steady frame rate (joins and keyframe
/// requests keep working).
pub(crate) fn video(
    stream: PortalStream,
    p: VideoParams,
) -> Result<Vec<gst::Element>, PipelineError> {
    let src = build(
        builder("pipewiresrc", "pipewiresrc")?
            .property("fd", stream.fd)
            .property("path", stream.node_id.to_string()),
        "pipewiresrc",
    )?;
    set_bool(&src, "always-copy", true)?;
    let interval_ms = (1000 / u64::from(p.framerate.max(1))).max(5);
    set_num(&src, "keepalive-time", interval_ms)?;
    soft(set_str_client_name(&src));
    Ok(vec![src])
}

fn set_str_client_name(src: &gst::Element) -> Result<(), PipelineError> {
    crate::capture::element::set_str(src, "client-name", "pixelpass")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_prefers_an_absolute_xdg_state_home() {
        let d = state_dir_from(Some("/x/state".into()), Some("/home/u".into()));
        assert_eq!(d, Some(PathBuf::from("/x/state")));
        let d = state_dir_from(Some("relative".into()), Some("/home/u".into()));
        assert_eq!(d, Some(PathBuf::from("/home/u/.local/state")));
        assert_eq!(state_dir_from(None, None), None);
    }

    #[test]
    fn the_token_store_saves_loads_and_forgets() {
        let dir = std::env::temp_dir().join(format!("pixelpass-token-{}", std::process::id()));
        let store = TokenStore::at(dir.join("pixelpass").join("screencast-monitor.token"));
        assert_eq!(store.load(), None);
        store.save("0d9b6b8e-1f7a-4c1e-9d53-5a1f7c2c1e11");
        assert_eq!(
            store.load().as_deref(),
            Some("0d9b6b8e-1f7a-4c1e-9d53-5a1f7c2c1e11")
        );
        store.save("second");
        assert_eq!(store.load().as_deref(), Some("second"));
        store.clear();
        assert_eq!(store.load(), None);
        // Junk in the file is no token.
        std::fs::write(store.path(), "two words\n").unwrap();
        assert_eq!(store.load(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_bus_nobody_listens_on_is_one_clear_line() {
        let e = connect_to("unix:path=/nonexistent/pixelpass-test-bus")
            .await
            .expect_err("no bus there");
        assert!(matches!(e, PortalError::NoBus(_)), "{e:?}");
        assert!(!e.to_string().contains('\n'));
        assert!(e.to_string().starts_with("no D-Bus session bus"), "{e}");
    }
}
