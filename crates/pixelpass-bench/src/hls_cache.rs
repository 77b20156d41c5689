//! `pixelpass-bench hls-cache`: origin requests per second against the
//! number of LL-HLS clients behind nginx (a caching proxy with request
//! collapsing, the README's config): the origin's load should stay flat.
//!
//! A `pixelpass host --source test` child and Debian's nginx in front of it,
//! both on loopback; for each client count, that many threads follow the
//! live edge through nginx for `--seconds` (four in five part by part with
//! blocking reloads, as hls.js does; one in five segment by segment, as
//! ffmpeg does). The origin's own request counters (`/status`, `hls.requests`)
//! before and after give its rate.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pixelpass_testkit::client::http::blocking::request;
use pixelpass_testkit::hls::{follow, Nginx};
use pixelpass_testkit::host::Host;

#[derive(clap::Args, Debug)]
pub struct HlsCacheArgs {
    /// Client counts to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
    pub clients: Vec<usize>,
    /// Seconds each count runs.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
}

/// The origin's HLS request counters: (total, parts, segments, max served per part).
fn origin(host: &Host) -> (u64, u64, u64, u64) {
    let st = host.status();
    let r = &st["hls"]["requests"];
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    let total = ["playlist", "blocking_playlist", "init", "part", "segment"]
        .iter()
        .map(|k| n(k))
        .sum();
    let max = st["hls"]["served"]["max_per_part"].as_u64().unwrap_or(0);
    (total, n("part"), n("segment"), max)
}

pub fn run(args: HlsCacheArgs) -> anyhow::Result<ExitCode> {
    if args.clients.iter().any(|&c| c == 0 || c > 2000) || !(1..=600).contains(&args.seconds) {
        anyhow::bail!("--clients: 1 to 2000 each; --seconds: 1 to 600");
    }
    let host = Host::builder().max_viewers(4).spawn();
    let nginx = Nginx::spawn(host.addr);
    let base = format!("/{}/hls/", host.token);
    let first = request(nginx.addr, "GET", &format!("{base}index.m3u8"));
    if first.status != 200 {
        anyhow::bail!(
            "the playlist through nginx: {} {}\nnginx: {}",
            first.status,
            first.text(),
            nginx.errors()
        );
    }
    println!("pixelpass bench hls-cache: host --source test (640x360, 30 fps, 1.5 Mbit/s) behind nginx, {} s per count", args.seconds);
    println!(
        "{:>7} {:>13} {:>13} {:>14} {:>17} {:>13} {:>9}",
        "clients",
        "client req/s",
        "origin req/s",
        "origin parts/s",
        "origin segments/s",
        "max per part",
        "failures"
    );
    for &n in &args.clients {
        let before = origin(&host);
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(args.seconds);
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (addr, base) = (nginx.addr, base.clone());
                std::thread::spawn(move || follow(addr, &base, i % 5 != 4, deadline))
            })
            .collect();
        let seen: Vec<_> = threads.into_iter().filter_map(|t| t.join().ok()).collect();
        let secs = t0.elapsed().as_secs_f64();
        let after = origin(&host);
        let client: usize = seen
            .iter()
            .map(|f| f.playlists + f.parts + f.segments)
            .sum();
        let failures: usize = seen.iter().map(|f| f.failures.len()).sum();
        println!(
            "{n:>7} {:>13.1} {:>13.1} {:>14.1} {:>17.2} {:>13} {failures:>9}",
            client as f64 / secs,
            (after.0 - before.0) as f64 / secs,
            (after.1 - before.1) as f64 / secs,
            (after.2 - before.2) as f64 / secs,
            after.3,
        );
    }
    Ok(ExitCode::SUCCESS)
}
