//! `pixelpass view URL`: play a pixelpass HTTP MPEG-TS stream in a local
//! player with low-latency options.
//!
//! The player is mpv, ffplay or VLC: the one chosen with `--player`, else the
//! first of them found on `PATH` in that order. The player's exit code
//! becomes ours.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A local video player that can play HTTP MPEG-TS.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Player {
    Mpv,
    Ffplay,
    Vlc,
}

impl Player {
    /// Preference order when no player is chosen.
    pub const ALL: [Player; 3] = [Player::Mpv, Player::Ffplay, Player::Vlc];

    /// Program names to look for on `PATH`, preferred first.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Player::Mpv => &["mpv"],
            Player::Ffplay => &["ffplay"],
            // `cvlc` is VLC without its Qt interface (package vlc-bin).
            Player::Vlc => &["vlc", "cvlc"],
        }
    }

    /// The Debian/Ubuntu package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            Player::Mpv => "mpv",
            Player::Ffplay => "ffmpeg",
            Player::Vlc => "vlc",
        }
    }

    fn display_name(self) -> &'static str {
        match self {
            Player::Mpv => "mpv",
            Player::Ffplay => "ffplay",
            Player::Vlc => "VLC",
        }
    }
}

/// The program name and arguments that play `url` with low latency.
///
/// Pure: the caller resolves the program on `PATH` (for VLC that may be `cvlc`,
/// which takes the same arguments).
/// The player command as one line to paste into a shell (banner, player page):
/// the same options `pixelpass view` uses, minus the window title.
pub fn shell_command(player: Player, url: &str) -> String {
    let (program, args) = player_command(player, url);
    let mut line = program;
    for a in args.iter().filter(|a| !a.starts_with("--title")) {
        line.push(' ');
        line.push_str(a);
    }
    line
}

pub fn player_command(player: Player, url: &str) -> (String, Vec<String>) {
    let args: &[&str] = match player {
        // `low-latency` is mpv's built-in profile (audio-buffer=0, one decoder
        // thread, no cache pause, lavf nobuffer, short probing); the rest
        // turns off what still buffers for a live, unseekable stream.
        // `noparse` (with `nofillin`, which it needs) hands each PES to the
        // decoder as it completes: otherwise libavformat's H.264 parser
        // holds every frame until the next one starts, one frame interval
        // (`bench latency --path mpv`: p50 80 → 50 ms at 30 frames/s).
        // pixelpass's TS carries exactly one access unit per PES.
        Player::Mpv => &[
            "--profile=low-latency",
            "--untimed",
            "--cache=no",
            "--demuxer-lavf-o-add=fflags=+nobuffer+noparse+nofillin",
            "--demuxer-lavf-analyzeduration=0.1",
            "--force-seekable=no",
            "--title=pixelpass",
        ],
        Player::Ffplay => &[
            "-hide_banner",
            "-fflags",
            "nobuffer",
            "-flags",
            "low_delay",
            "-framedrop",
            "-probesize",
            "32",
            "-analyzeduration",
            "0",
            "-sync",
            "ext",
            "-window_title",
            "pixelpass",
        ],
        Player::Vlc => &["--network-caching=100", "--no-video-title-show"],
    };
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(url.to_string());
    (player.programs()[0].to_string(), args)
}

/// Accept only `http://HOST…` and `https://HOST…` URLs.
pub fn validate_url(url: &str) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("http://") {
        r
    } else if let Some(r) = lower.strip_prefix("https://") {
        r
    } else {
        bail!(
            "not an http(s) URL: {url:?} (expected e.g. http://192.168.1.20:8860/TOKEN/stream.ts)"
        );
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        bail!("URL has no host: {url:?}");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("URL contains whitespace or control characters: {url:?}");
    }
    Ok(())
}

/// The first executable file named `program` in the directories of `path`
/// (a `PATH`-style list).
pub fn find_in_path(program: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path)
        // An empty PATH entry means the current directory; do not run players from there.
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) => m.is_file() && m.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

fn find_player(player: Player, path: Option<&OsStr>) -> Option<PathBuf> {
    player
        .programs()
        .iter()
        .find_map(|prog| find_in_path(prog, path))
}

/// Which player to run and where it is: the requested one, else the first found.
pub fn choose_player(requested: Option<Player>, path: Option<&OsStr>) -> Result<(Player, PathBuf)> {
    match requested {
        Some(p) => match find_player(p, path) {
            Some(exe) => Ok((p, exe)),
            None => bail!(
                "{} not found on PATH: install it (apt-get install {}) or choose another with --player",
                p.display_name(),
                p.package()
            ),
        },
        None => Player::ALL
            .iter()
            .find_map(|&p| find_player(p, path).map(|exe| (p, exe)))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no player found: install mpv (apt-get install mpv), ffplay (apt-get install ffmpeg) or VLC (apt-get install vlc)"
                )
            }),
    }
}

/// Play `url`; returns the player's exit code.
pub fn run(url: &str, player: Option<Player>) -> Result<i32> {
    run_with_path(url, player, std::env::var_os("PATH"))
}

fn run_with_path(url: &str, player: Option<Player>, path: Option<OsString>) -> Result<i32> {
    validate_url(url)?;
    let (player, exe) = choose_player(player, path.as_deref())?;
    let (_, args) = player_command(player, url);
    eprintln!("pixelpass: playing {url} with {}", exe.display());

    let mut child = Command::new(&exe)
        .args(&args)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    // Ctrl+C reaches the player too (same process group): let the player
    // decide how to quit and hand on its exit code, like system(3) does.
    let _guard = IgnoreInterrupts::new();
    let status = child
        .wait()
        .with_context(|| format!("waiting for {}", exe.display()))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    })
}

/// Ignores SIGINT and SIGQUIT in this process until dropped (set after the
/// child is spawned, so the child keeps the default dispositions).
struct IgnoreInterrupts {
    old_int: libc::sighandler_t,
    old_quit: libc::sighandler_t,
}

impl IgnoreInterrupts {
    fn new() -> Self {
        // SAFETY: signal(2) with SIG_IGN installs no Rust code as a handler.
        unsafe {
            Self {
                old_int: libc::signal(libc::SIGINT, libc::SIG_IGN),
                old_quit: libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            }
        }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        // SAFETY: restores the dispositions that were in place before.
        unsafe {
            if self.old_int != libc::SIG_ERR {
                libc::signal(libc::SIGINT, self.old_int);
            }
            if self.old_quit != libc::SIG_ERR {
                libc::signal(libc::SIGQUIT, self.old_quit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory that is removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "pixelpass-view-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn file(&self, name: &str, body: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }

        fn path_var(dirs: &[&TempDir]) -> OsString {
            std::env::join_paths(dirs.iter().map(|d| d.0.clone())).unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const URL: &str = "http://127.0.0.1:8787/tok/stream.ts";

    #[test]
    fn mpv_gets_low_latency_options_and_the_url_last() {
        let (prog, args) = player_command(Player::Mpv, URL);
        assert_eq!(prog, "mpv");
        for want in [
            "--profile=low-latency",
            "--untimed",
            "--cache=no",
            "--force-seekable=no",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "mpv args lack {want}: {args:?}"
            );
        }
        assert!(
            args.iter().any(|a| a.contains("fflags=+nobuffer")),
            "{args:?}"
        );
        assert_eq!(args.last().map(String::as_str), Some(URL));
    }

    #[test]
    fn ffplay_gets_low_delay_flag_pairs() {
        let (prog, args) = player_command(Player::Ffplay, URL);
        assert_eq!(prog, "ffplay");
        let pairs = [
            ("-fflags", "nobuffer"),
            ("-flags", "low_delay"),
            ("-probesize", "32"),
            ("-analyzeduration", "0"),
            ("-sync", "ext"),
        ];
        for (flag, value) in pairs {
            let i = args
                .iter()
                .position(|a| a == flag)
                .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
            assert_eq!(args[i + 1], value, "{flag} takes {value}");
        }
        assert!(args.iter().any(|a| a == "-framedrop"));
        assert_eq!(args.last().map(String::as_str), Some(URL));
    }

    #[test]
    fn vlc_gets_short_network_caching() {
        let (prog, args) = player_command(Player::Vlc, URL);
        assert_eq!(prog, "vlc");
        assert!(
            args.iter().any(|a| a == "--network-caching=100"),
            "{args:?}"
        );
        assert_eq!(args.last().map(String::as_str), Some(URL));
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        validate_url(URL).unwrap();
        validate_url("https://example.com/t/stream.ts").unwrap();
        validate_url("HTTP://[::1]:8787/t/stream.ts").unwrap();
        for bad in [
            "",
            "file:///etc/passwd",
            "rtsp://h/x",
            "127.0.0.1:8787/t/stream.ts",
            "http://",
            "http:///x",
            "http://h/a b",
            "--help",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn path_lookup_takes_executable_files_in_path_order() {
        let a = TempDir::new();
        let b = TempDir::new();
        a.file("mpv", "not executable", 0o644);
        let want = b.file("mpv", "#!/bin/sh\n", 0o755);
        std::fs::create_dir(a.0.join("ffplay")).unwrap(); // a directory is not a program
        let path = TempDir::path_var(&[&a, &b]);
        assert_eq!(find_in_path("mpv", Some(&path)), Some(want));
        assert_eq!(find_in_path("ffplay", Some(&path)), None);
        assert_eq!(find_in_path("mpv", None), None);
    }

    #[test]
    fn default_choice_follows_mpv_ffplay_vlc_order() {
        let d = TempDir::new();
        let path = TempDir::path_var(&[&d]);
        let err = choose_player(None, Some(&path)).unwrap_err().to_string();
        assert_eq!(
            err,
            "no player found: install mpv (apt-get install mpv), ffplay (apt-get install ffmpeg) or VLC (apt-get install vlc)"
        );

        d.file("cvlc", "#!/bin/sh\n", 0o755);
        assert_eq!(choose_player(None, Some(&path)).unwrap().0, Player::Vlc);
        d.file("ffplay", "#!/bin/sh\n", 0o755);
        assert_eq!(choose_player(None, Some(&path)).unwrap().0, Player::Ffplay);
        let mpv = d.file("mpv", "#!/bin/sh\n", 0o755);
        assert_eq!(
            choose_player(None, Some(&path)).unwrap(),
            (Player::Mpv, mpv)
        );
        // An explicit choice wins over the order.
        assert_eq!(
            choose_player(Some(Player::Vlc), Some(&path)).unwrap().1,
            d.0.join("cvlc")
        );
    }

    #[test]
    fn a_chosen_player_that_is_missing_is_a_clear_error() {
        let d = TempDir::new();
        d.file("mpv", "#!/bin/sh\n", 0o755);
        let path = TempDir::path_var(&[&d]);
        let err = choose_player(Some(Player::Ffplay), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ffplay not found")
                && err.contains("apt-get install ffmpeg")
                && err.contains("--player"),
            "{err}"
        );
    }

    #[test]
    fn run_passes_the_url_and_returns_the_players_exit_code() {
        let d = TempDir::new();
        let log = d.0.join("args");
        d.file(
            "ffplay",
            &format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexit 7\n",
                log.display()
            ),
            0o755,
        );
        let path = TempDir::path_var(&[&d]);
        // Exec'ing a file just written can race a fork in another test thread
        // that briefly holds the write descriptor (ETXTBSY): retry that.
        let mut tries = 0;
        let code = loop {
            match run_with_path(URL, Some(Player::Ffplay), Some(path.clone())) {
                Err(e) if format!("{e:#}").contains("Text file busy") && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => break r.unwrap(),
            }
        };
        assert_eq!(code, 7);
        let args = std::fs::read_to_string(&log).unwrap();
        assert_eq!(args.lines().last(), Some(URL));
        assert!(args.lines().any(|l| l == "nobuffer"), "{args}");

        // A bad URL fails before any player runs.
        std::fs::remove_file(&log).unwrap();
        assert!(run_with_path("ftp://x/y", None, Some(path)).is_err());
        assert!(!log.exists());
    }
}
