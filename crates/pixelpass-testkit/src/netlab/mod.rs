//! A small internet in network namespaces, for the tests that cross NAT:
//!
//! ```text
//!  home 192.0.2.2 ── nat (192.0.2.1 | 203.0.113.1, masquerade) ── wan switch ─┬─ public 203.0.113.10
//!                                                                             └─ viewer 203.0.113.20
//!  thin (only loopback: reached only through an impaired link a test builds)
//! ```
//!
//! [`Lab::new`] builds it with `ip` and `nft` (root needed: it says so
//! otherwise), with namespace names unique to this process and call
//! (`pp<pid>-<n>-home`, …); [`Lab::command`] / [`Lab::spawn`] run programs
//! inside a node, [`Lab::in_ns`] / [`Lab::block_on`] run the test's own code
//! there (e.g. a str0m client on a tokio runtime in `viewer`). Dropping the
//! lab (also while a test panics) stops its children by PID (SIGTERM, then
//! SIGKILL), then deletes every namespace; veths go with them. Everything
//! is bounded in time. See [`topology`] for the addresses and rules.

mod children;
pub mod impair;
mod ns_thread;
mod run;
mod snmp;
mod teardown;
pub mod topology;

use std::ffi::OsStr;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

pub use children::{Spawned, TERM_GRACE};
pub use run::find_program;
pub use snmp::udp_counter;
pub use topology::{Node, HOME, LAN, NAT_LAN, NAT_WAN, PUBLIC, THIN, VIEWER, WAN};

use children::Children;
use topology::{Names, Step};

/// A running lab. Everything it made goes away on drop (or [`Lab::close`]).
pub struct Lab {
    names: Names,
    ip: PathBuf,
    nft: PathBuf,
    /// Namespaces made so far, in order (a lab that fails half-way deletes these).
    created: Vec<String>,
    children: Children,
    closed: bool,
}

impl Lab {
    /// Build the lab. Errors name the step that failed; what was made before
    /// it is torn down again.
    pub fn new() -> anyhow::Result<Lab> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let (ip, nft) = run::preflight()?;
        match teardown::sweep_stale(&ip) {
            Ok(swept) if !swept.is_empty() => {
                eprintln!(
                    "netlab: deleted namespaces left by test processes that are gone: {swept:?}"
                )
            }
            Ok(_) => {}
            Err(e) => eprintln!("netlab: could not look for stale lab namespaces: {e:#}"),
        }
        let prefix = format!(
            "pp{}-{}-",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            names: Names { prefix },
            ip,
            nft,
            created: Vec::new(),
            children: Children::default(),
            closed: false,
        };
        lab.build().context("cannot build the network lab")?;
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        for ns in self.names.all() {
            let mut cmd = Command::new(&self.ip);
            cmd.args(["netns", "add", &ns]);
            run::check(cmd, None)?;
            self.created.push(ns);
        }
        for step in topology::plan(&self.names) {
            self.step(&step)
                .with_context(|| format!("lab step {step:?}"))?;
        }
        Ok(())
    }

    fn step(&self, step: &Step) -> anyhow::Result<()> {
        match step {
            Step::Ip { ns, args } => {
                let mut cmd = Command::new(&self.ip);
                cmd.arg("-n").arg(ns).args(args);
                run::check(cmd, None).map(drop)
            }
            Step::Sysctl { ns, key, value } => {
                let path = format!("/proc/sys/{key}");
                ns_thread::run(&netns_path(ns), format!("netlab-{ns}"), || {
                    std::fs::write(&path, value)
                        .with_context(|| format!("cannot write {value} to {path} in {ns}"))
                })?
            }
            Step::Nft { ns, ruleset } => {
                let mut cmd = Command::new(&self.ip);
                cmd.args(["netns", "exec", ns])
                    .arg(&self.nft)
                    .args(["-f", "-"]);
                run::check(cmd, Some(ruleset)).map(drop)
            }
        }
    }

    /// What every namespace name of this lab starts with (`pp<pid>-<n>-`).
    pub fn prefix(&self) -> &str {
        &self.names.prefix
    }

    /// The namespace name of `node` (for `ip netns exec`, `ip -n`).
    pub fn namespace(&self, node: Node) -> String {
        self.names.of(node)
    }

    /// Every namespace of the lab, the WAN switch's included.
    pub fn namespaces(&self) -> Vec<String> {
        self.names.all()
    }

    /// `node`'s address (nat: its WAN side, the source of home's traffic outside).
    pub fn addr(&self, node: Node) -> IpAddr {
        node.ip()
    }

    /// `/run/netns/NAME` of `node`.
    pub fn netns_path(&self, node: Node) -> PathBuf {
        netns_path(&self.names.of(node))
    }

    /// `program` to be run inside `node` (`ip netns exec NAME program`; `ip`
    /// execs it, so the child's PID is the program's).
    pub fn command(&self, node: Node, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec"])
            .arg(self.names.of(node))
            .arg(program);
        cmd
    }

    /// The same as a `tokio::process::Command` (set `kill_on_drop` as you like).
    pub fn tokio_command(&self, node: Node, program: impl AsRef<OsStr>) -> tokio::process::Command {
        tokio::process::Command::from(self.command(node, program))
    }

    /// Start `cmd` (made with [`Lab::command`]) and keep it: the lab stops
    /// and reaps it on drop. The pipes you asked for are in the result.
    pub fn spawn(&self, mut cmd: Command) -> anyhow::Result<Spawned> {
        let what = run::describe(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{what}`"))?;
        Ok(self.children.keep(child, what))
    }

    /// Stop a kept child now: SIGTERM, SIGKILL after [`TERM_GRACE`], reaped.
    pub fn stop(&self, pid: u32) -> anyhow::Result<ExitStatus> {
        self.children.stop(pid)
    }

    /// A kept child's status if it has exited (then the lab forgets it).
    pub fn try_wait(&self, pid: u32) -> anyhow::Result<Option<ExitStatus>> {
        self.children.try_wait(pid)
    }

    /// Wait at most `timeout` for a kept child to exit by itself.
    pub fn wait(&self, pid: u32, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.children.wait(pid, timeout)
    }

    /// PIDs of the children the lab keeps.
    pub fn child_pids(&self) -> Vec<u32> {
        self.children.pids()
    }

    /// Run `cmd` to its end and collect its output, killed (by PID) after
    /// `timeout`; any exit status is returned, only a timeout is an error.
    pub fn output(&self, cmd: Command, timeout: Duration) -> anyhow::Result<Output> {
        run::output(cmd, None, timeout)
    }

    /// Run `f` on a fresh thread inside `node`'s namespace and return its
    /// result; sockets it makes stay in `node` wherever they are used later.
    /// A panic in `f` goes on in the caller.
    pub fn in_ns<T, F>(&self, node: Node, f: F) -> anyhow::Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        ns_thread::run(&self.netns_path(node), format!("netlab-{node}"), f)
    }

    /// Like [`Lab::in_ns`], but the thread runs on its own; join it for the result.
    /// It keeps the namespace alive: join it before the lab is dropped.
    pub fn thread_in<T, F>(&self, node: Node, f: F) -> anyhow::Result<JoinHandle<anyhow::Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        ns_thread::spawn(&self.netns_path(node), format!("netlab-{node}"), f)
    }

    /// Run the future `make` returns on a tokio current-thread runtime in
    /// `node` (threads the runtime starts are in `node` too).
    pub fn block_on<T, F, Fut>(&self, node: Node, make: F) -> anyhow::Result<T>
    where
        T: Send,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
    {
        ns_thread::block_on(&self.netns_path(node), format!("netlab-{node}"), make)
    }

    /// An impaired link (delay, jitter, loss, rate; see [`impair`]) between
    /// `a` and `b`: a TUN device in each with `cfg`'s addresses. Drop it
    /// before the lab (declare it after the lab).
    pub fn impaired_link(
        &self,
        a: Node,
        b: Node,
        cfg: impair::LinkConfig,
    ) -> anyhow::Result<impair::ImpairedLink> {
        impair::ImpairedLink::start(&self.ip, &self.names.of(a), &self.names.of(b), cfg)
            .with_context(|| format!("cannot build an impaired link {a} ↔ {b}"))
    }

    /// Tear down now and say what went wrong, if anything (drop does the
    /// same and prints the errors).
    pub fn close(mut self) -> anyhow::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let mut errors: Vec<String> = self
            .children
            .stop_all()
            .into_iter()
            .filter_map(|r| r.err().map(|e| format!("{e:#}")))
            .collect();
        // Children first, then whatever else runs inside, then the namespaces.
        for ns in self.created.iter().rev() {
            if let Err(e) = teardown::kill_stragglers(&self.ip, ns) {
                errors.push(format!("{e:#}"));
            }
            if let Err(e) = teardown::delete(&self.ip, ns) {
                errors.push(format!("{e:#}"));
            }
        }
        self.created.clear();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "network lab teardown: {}",
                errors.join("; ")
            ))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("netlab: {e:#}");
        }
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}
