//! Code of the test process itself inside a lab namespace: a fresh thread
//! that did `setns(CLONE_NEWNET)` (a thread's network namespace is its own,
//! and threads it starts inherit it). Sockets belong to the namespace they
//! were made in, whichever thread uses them later: a listener made in
//! `public` can be accepted on from the test's own thread.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};

/// The namespace handle `ip netns add` left in /run/netns.
pub fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| {
        format!(
            "cannot open the network namespace {} (was the lab torn down?)",
            path.display()
        )
    })
}

/// Move the calling thread into the namespace `ns` refers to.
fn enter(ns: &File, path: &Path) -> anyhow::Result<()> {
    // SAFETY: setns(2) with a valid open fd; it only changes this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("setns into {} failed (needs CAP_SYS_ADMIN)", path.display())
        });
    }
    Ok(())
}

/// Run `f` on a new thread inside the namespace at `path`; returns what it
/// returns. A panic in `f` goes on in the caller (so test assertions read
/// as usual).
pub fn run<T, F>(path: &Path, thread_name: String, f: F) -> anyhow::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = open(path)?;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(thread_name)
            .spawn_scoped(s, move || -> anyhow::Result<T> {
                enter(&ns, path)?;
                drop(ns);
                Ok(f())
            })
            .context("cannot start a thread")?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Like [`run`], but the thread goes on by itself: join the handle for `f`'s result.
pub fn spawn<T, F>(
    path: &Path,
    thread_name: String,
    f: F,
) -> anyhow::Result<JoinHandle<anyhow::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = open(path)?;
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            enter(&ns, &path)?;
            drop(ns);
            Ok(f())
        })
        .context("cannot start a thread")
}

/// Run the future `make()` returns on a tokio current-thread runtime
/// inside the namespace at `path` (the future need not be `Send`).
pub fn block_on<T, F, Fut>(path: &Path, thread_name: String, make: F) -> anyhow::Result<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
{
    run(path, thread_name, move || -> anyhow::Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow!("cannot build a tokio runtime: {e}"))?;
        Ok(rt.block_on(make()))
    })?
}
