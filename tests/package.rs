//! What the Debian package installs, checked the way its users meet it:
//! the bash completion loads and completes, the man pages render, systemd
//! accepts the units, the example config starts `serve`, and the .deb made
//! by `scripts/package.sh` holds all of it and installs (and purges) in a
//! throw-away root with its dependencies checked.
//!
//! The .deb needs a release build and cargo-deb: `.ci/run` runs
//! `scripts/package.sh` before the tests, and the package test fails in CI
//! (CI set) without it; elsewhere it says how to make it and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pixelpass::config::ServeConfig;
use pixelpass_testkit::client::http::blocking::request_with;
use pixelpass_testkit::package::{find_deb, run_ok, systemd_verify, ThrowawayRoot};
use pixelpass_testkit::tools::{first_line, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_pixelpass");
const SUBCOMMANDS: [&str; 5] = ["host", "serve", "view", "doctor", "completions"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn packaging(file: &str) -> PathBuf {
    repo().join("packaging").join(file)
}

fn pixelpass(args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_ok(cmd, &format!("pixelpass {}", args.join(" "))).stdout
}

/// `pixelpass manpages DIR/man1`: the pages the package installs.
fn man_pages(dir: &TempDir) -> PathBuf {
    let man1 = dir.0.join("man1");
    pixelpass(&["manpages", &man1.display().to_string()]);
    man1
}

#[test]
fn help_lists_the_subcommands_but_not_the_packagers_one() {
    let help = pixelpass(&["--help"]);
    for sub in SUBCOMMANDS {
        assert!(help.contains(&format!("\n  {sub} ")), "{sub} in:\n{help}");
    }
    assert!(!help.contains("manpages"), "hidden:\n{help}");
}

#[test]
fn the_bash_completion_loads_and_completes() {
    let script = format!(
        "source <('{BIN}' completions bash) && complete -p pixelpass \
         && COMP_WORDS=(pixelpass se) COMP_CWORD=1 && _pixelpass pixelpass se pixelpass \
         && echo \"first: ${{COMPREPLY[*]}}\" \
         && COMP_WORDS=(pixelpass serve --con) COMP_CWORD=2 && _pixelpass pixelpass --con serve \
         && echo \"serve: ${{COMPREPLY[*]}}\""
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    let out = run_ok(cmd, "bash completion").stdout;
    assert!(
        out.contains("-F _pixelpass pixelpass"),
        "complete -p pixelpass:\n{out}"
    );
    assert!(out.contains("first: serve"), "`pixelpass se<TAB>`:\n{out}");
    assert!(
        out.contains("serve: --config"),
        "`pixelpass serve --con<TAB>`:\n{out}"
    );
    for shell in ["zsh", "fish"] {
        let text = pixelpass(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{sub} in the {shell} completion");
        }
        assert!(!text.contains("manpages"), "{shell}: hidden stays hidden");
    }
}

#[test]
fn the_man_pages_render_with_every_subcommand() {
    let dir = TempDir::new("man");
    let man1 = man_pages(&dir);
    for page in [
        "pixelpass",
        "pixelpass-host",
        "pixelpass-serve",
        "pixelpass-view",
        "pixelpass-doctor",
    ] {
        let path = man1.join(format!("{page}.1"));
        // groff's warnings (-ww) on the page as man-db feeds it (-k: preconv).
        let mut groff = Command::new("groff");
        groff.args(["-k", "-man", "-Tutf8", "-ww", "-z"]).arg(&path);
        let out = run_ok(groff, &format!("groff {page}.1"));
        assert_eq!(out.stderr.trim(), "", "groff warnings for {page}.1");
    }
    let mut man = Command::new("man");
    man.arg("-l")
        .arg(man1.join("pixelpass.1"))
        .env("MANWIDTH", "100");
    let text = run_ok(man, "man -l pixelpass.1").stdout;
    assert!(text.contains("SYNOPSIS"), "{text}");
    for sub in SUBCOMMANDS {
        assert!(
            text.contains(&format!("pixelpass-{sub}(1)")),
            "{sub} in:\n{text}"
        );
    }
    let mut man = Command::new("man");
    man.arg("-l")
        .arg(man1.join("pixelpass-serve.1"))
        .env("MANWIDTH", "100");
    let serve = run_ok(man, "man -l pixelpass-serve.1").stdout;
    assert!(serve.contains("--config"), "{serve}");
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let dir = TempDir::new("units-man");
    man_pages(&dir);
    let binary = Path::new(BIN);
    let system = systemd_verify(
        &packaging("pixelpass.pixelpass-serve.service"),
        false,
        binary,
        &dir.0,
    );
    assert_eq!(system, "", "pixelpass-serve.service");
    let user = systemd_verify(&packaging("pixelpass-host.service"), true, binary, &dir.0);
    assert_eq!(user, "", "pixelpass-host.service");

    let unit =
        std::fs::read_to_string(packaging("pixelpass.pixelpass-serve.service")).expect("the unit");
    for line in [
        "ExecStart=/usr/bin/pixelpass serve --config /etc/pixelpass/serve.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=pixelpass",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=pixelpass",
        "Restart=on-failure",
        "LimitNOFILE=65536",
        "AmbientCapabilities=\n",
    ] {
        assert!(unit.contains(line), "{line:?} in the unit");
    }
}

#[test]
fn the_example_config_loads_and_serve_runs_it() {
    let path = packaging("serve.toml");
    let config = ServeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<(&str, bool, bool)> = config
        .streams
        .iter()
        .map(|s| {
            (
                s.id.as_str(),
                s.publish_token.is_some(),
                !s.input.is_empty(),
            )
        })
        .collect();
    assert_eq!(ids, [("desk", true, false), ("test", false, true)]);

    // The real server on it, on loopback (the flags override the addresses).
    let token = "package-test-api-token";
    let mut child = Command::new(BIN)
        .args(["serve", "--json", "--config"])
        .arg(&path)
        .args(pixelpass_testkit::serve::ON_LOOPBACK)
        .args(["--api-token", token])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pixelpass serve");
    let banner = child
        .stdout
        .take()
        .and_then(|out| first_line(out, Duration::from_secs(30)));
    let listed = banner.and_then(|line| {
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        let addr = v["listen"].as_str()?.parse().ok()?;
        let auth = format!("Bearer {token}");
        let r = request_with(
            addr,
            "GET",
            "/api/v1/streams",
            &[("Authorization", &auth)],
            b"",
        );
        let list: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        Some((r.status, list))
    });
    let _ = child.kill();
    let _ = child.wait();
    let (status, list) = listed.expect("serve started on the example config and answered");
    assert_eq!(status, 200, "{list}");
    let got: Vec<(&str, &str)> = list
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["id"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // The published stream waits for its publisher; the on-demand one for a viewer.
    assert_eq!(got.len(), 2, "{list:#}");
    assert!(got.iter().any(|(id, _)| *id == "desk"), "{list:#}");
    assert!(got.contains(&("test", "idle")), "{list:#}");
}

#[test]
fn the_deb_holds_everything_and_installs_into_a_throwaway_root() {
    let version = env!("CARGO_PKG_VERSION");
    let Some(deb) = find_deb(&repo(), version) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no target/debian/pixelpass_{version}-1_*.deb: .ci/run runs scripts/package.sh before the tests"
        );
        eprintln!("SKIPPED: no .deb; `scripts/package.sh` makes it (release build + cargo-deb)");
        return;
    };
    let deb_s = deb.display().to_string();

    let mut info = Command::new("dpkg-deb");
    info.args(["--info", &deb_s]);
    let info = run_ok(info, "dpkg-deb --info").stdout;
    for want in [
        "Package: pixelpass",
        "gstreamer1.0-plugins-ugly",
        "gstreamer1.0-libav",
        "libgstreamer1.0-0",
        "Recommends: ffmpeg",
    ] {
        assert!(info.contains(want), "{want:?} in dpkg-deb --info:\n{info}");
    }
    let mut conffiles = Command::new("dpkg-deb");
    conffiles.args(["--info", &deb_s, "conffiles"]);
    let conffiles = run_ok(conffiles, "dpkg-deb --info DEB conffiles").stdout;
    assert_eq!(conffiles.trim(), "/etc/pixelpass/serve.toml");

    let mut contents = Command::new("dpkg-deb");
    contents.args(["--contents", &deb_s]);
    let contents = run_ok(contents, "dpkg-deb --contents").stdout;
    let files: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for want in [
        "./usr/bin/pixelpass",
        "./usr/lib/systemd/system/pixelpass-serve.service",
        "./usr/lib/systemd/user/pixelpass-host.service",
        "./usr/lib/sysusers.d/pixelpass.conf",
        "./etc/pixelpass/serve.toml",
        "./usr/share/bash-completion/completions/pixelpass",
        "./usr/share/zsh/vendor-completions/_pixelpass",
        "./usr/share/fish/vendor_completions.d/pixelpass.fish",
        "./usr/share/man/man1/pixelpass.1.gz",
        "./usr/share/man/man1/pixelpass-serve.1.gz",
        "./usr/share/doc/pixelpass/README.md",
        "./usr/share/doc/pixelpass/copyright",
    ] {
        assert!(
            files.contains(&want),
            "{want} in dpkg-deb --contents:\n{contents}"
        );
    }
    let bins: Vec<&&str> = files
        .iter()
        .filter(|f| f.contains("/bin/") && !f.ends_with('/'))
        .collect();
    assert_eq!(
        bins,
        [&"./usr/bin/pixelpass"],
        "one binary: no bench, no test kit"
    );

    let root = ThrowawayRoot::new("deb-root");
    let install = root.dpkg(&["-i", &deb_s]);
    assert!(
        install.success(),
        "dpkg -i (dependencies checked against this machine's packages):\n{}\n{}",
        install.stdout,
        install.stderr
    );
    let status = root.query(&["-W", "-f=${db:Status-Abbrev} ${Conffiles}", "pixelpass"]);
    assert!(status.starts_with("ii "), "{status}");
    assert!(
        status.contains("/etc/pixelpass/serve.toml"),
        "a conffile: {status}"
    );

    // The installed binary runs here and is stripped.
    let installed = root.path("usr/bin/pixelpass");
    let mut version_cmd = Command::new(&installed);
    version_cmd.arg("--version");
    let v = run_ok(version_cmd, "the installed pixelpass --version").stdout;
    assert!(v.contains(version), "{v}");
    let mut sections = Command::new("readelf");
    sections.arg("-S").arg(&installed);
    let sections = run_ok(sections, "readelf -S").stdout;
    for gone in [".symtab", ".debug_info", ".debug_line"] {
        assert!(!sections.contains(gone), "stripped, no {gone}:\n{sections}");
    }

    // postinst: the user (systemd-sysusers into DIR), the config's owner and mode.
    let uid = root
        .id_of("etc/passwd", "pixelpass")
        .expect("the pixelpass user in DIR/etc/passwd");
    let gid = root
        .id_of("etc/group", "pixelpass")
        .expect("the pixelpass group in DIR/etc/group");
    assert!(uid > 0 && uid < 1000, "a system user: {uid}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root.path("etc/pixelpass/serve.toml")).expect("the config");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, gid, 0o640)
    );

    // The installed unit, with the installed binary and man pages.
    let unit = root.path("usr/lib/systemd/system/pixelpass-serve.service");
    let problems = systemd_verify(&unit, false, &installed, &root.path("usr/share/man"));
    assert_eq!(problems, "", "installed pixelpass-serve.service");

    let purge = root.dpkg(&["--purge", "pixelpass"]);
    assert!(
        purge.success(),
        "dpkg --purge:\n{}\n{}",
        purge.stdout,
        purge.stderr
    );
    assert!(!installed.exists() && !root.path("etc/pixelpass/serve.toml").exists());
}
