//! `pixelpass-bench whep-fanout-client`: the peers' process. N [`WhepClient`]s join,
//! record their stats at the window's edges and print [`ClientLine`]s.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::lines::{ClientLine, PeerWindow};
use super::procstat;
use super::WhepFanoutClientArgs;
use pixelpass_testkit::client::{ClientStats, WhepClient, WhepError, WhepEvent, WhepOptions};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Peers not streaming this long after the first began to connect give
/// up: a saturated server (or peers' process) connects ever more slowly,
/// and the step is measured with those that made it (the bench waits 120 s
/// for the ready line).
const CONNECT_WITHIN: Duration = Duration::from_secs(90);

/// Why a peer is not streaming.
enum Fail {
    /// The server answered 503 (`--webrtc-max-load`) until the connect limit.
    Refused,
    Error(String),
}

/// Shared between the peer tasks and the conductor of the child process.
struct Shared {
    /// 0 warm-up, 1 window, 2 window over, 3 quit.
    phase: tokio::sync::watch::Sender<u8>,
    /// Per peer: stats at the window start and end.
    snaps: Mutex<Vec<[Option<ClientStats>; 2]>>,
    closed_early: AtomicU64,
}

fn emit(line: &ClientLine) {
    if let Ok(s) = serde_json::to_string(line) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }
}

pub fn run_client(args: WhepFanoutClientArgs) -> anyhow::Result<ExitCode> {
    if args.url.is_empty() {
        bail!("--url is required");
    }
    if let Some(cpu) = args.cpu {
        if let Err(e) = procstat::pin_to_cpu(cpu) {
            eprintln!("peers: cannot pin to CPU {cpu}: {e}");
        }
    }
    let _ = procstat::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(client_main(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

async fn client_main(args: WhepFanoutClientArgs) -> anyhow::Result<ExitCode> {
    let n = args.peers;
    let (phase, _) = tokio::sync::watch::channel(0u8);
    let shared = Arc::new(Shared {
        phase,
        snaps: Mutex::new(vec![[None, None]; n]),
        closed_early: AtomicU64::new(0),
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), Fail>>();
    let t0 = Instant::now();
    let connect_by = tokio::time::Instant::from_std(t0 + CONNECT_WITHIN);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (url, shared, sem, ready) = (
            args.url[i % args.url.len()].clone(),
            shared.clone(),
            sem.clone(),
            ready_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            peer(i, url, shared, sem, ready, connect_by).await
        }));
    }
    drop(ready_tx);
    let (mut connected, mut refused, mut errors) = (0usize, 0usize, Vec::new());
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(()) => connected += 1,
            Err(Fail::Refused) => refused += 1,
            Err(Fail::Error(e)) => errors.push(e),
        }
    }
    let failed = errors.len();
    errors.truncate(5);
    emit(&ClientLine::Ready {
        connected,
        refused,
        failed,
        errors,
        connect_s: t0.elapsed().as_secs_f64(),
    });
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let cpu0 = procstat::process_cpu()?;
    let w0 = Instant::now();
    shared.phase.send_replace(1);
    emit(&ClientLine::Window);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    shared.phase.send_replace(2);
    let window_s = w0.elapsed().as_secs_f64();
    let cpu = procstat::process_cpu()?.since(&cpu0);
    // Every live peer records its end-of-window stats within a few ms.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let done = {
            let snaps = shared.snaps.lock().unwrap_or_else(|e| e.into_inner());
            snaps
                .iter()
                .filter(|s| s[0].is_some() && s[1].is_none())
                .count()
                == 0
        };
        if done || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peers: Vec<PeerWindow> = {
        let snaps = shared.snaps.lock().unwrap_or_else(|e| e.into_inner());
        let url = |i: usize| i % args.url.len();
        snaps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                [Some(a), Some(b)] => Some(PeerWindow {
                    url: url(i),
                    ..PeerWindow::between(a, b)
                }),
                [Some(_), None] => Some(PeerWindow {
                    url: url(i),
                    ..PeerWindow::default()
                }),
                _ => None,
            })
            .collect()
    };
    emit(&ClientLine::Result {
        window_s,
        client_cpu_s: cpu.total().as_secs_f64(),
        peers,
        closed_early: shared.closed_early.load(Ordering::Relaxed) as usize,
    });
    shared.phase.send_replace(3);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// One peer: connect (a few at a time), wait for the first keyframe, then
/// keep receiving; record stats at the window's edges; DELETE at the end.
async fn peer(
    i: usize,
    url: String,
    shared: Arc<Shared>,
    sem: Arc<tokio::sync::Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), Fail>>,
    connect_by: tokio::time::Instant,
) {
    // Refused at least once: a peer still not streaming at the connect
    // limit was kept out by the server's load limit.
    let refused = std::sync::atomic::AtomicBool::new(false);
    let connect = async {
        loop {
            // A few handshakes at a time; the wait for the first keyframe
            // (up to a GOP: the replay makes none on demand) holds no permit.
            let permit = sem
                .acquire()
                .await
                .map_err(|e| Fail::Error(e.to_string()))?;
            let mut c = match WhepClient::connect_with(&url, LOOPBACK, WhepOptions::default()).await
            {
                Ok(c) => c,
                // Refused (`--webrtc-max-load`): try again when told, like
                // the player page.
                Err(WhepError::Status {
                    status: 503,
                    retry_after,
                    ..
                }) => {
                    drop(permit);
                    refused.store(true, Ordering::Relaxed);
                    let secs = retry_after
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(5)
                        .clamp(1, 30);
                    let again = tokio::time::Instant::now() + Duration::from_secs(secs);
                    if again >= connect_by {
                        return Err(Fail::Refused);
                    }
                    tokio::time::sleep_until(again).await;
                    continue;
                }
                Err(e) => return Err(Fail::Error(e.to_string())),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut permit = Some(permit);
            loop {
                match c
                    .next_event(deadline)
                    .await
                    .map_err(|e| Fail::Error(e.to_string()))?
                {
                    None => return Err(Fail::Error("no keyframe within 30 s".to_owned())),
                    Some(WhepEvent::Connected) => drop(permit.take()),
                    Some(WhepEvent::Video(f)) if f.keyframe => return Ok(c),
                    Some(WhepEvent::Closed) => {
                        return Err(Fail::Error("closed by the server".to_owned()))
                    }
                    Some(_) => {}
                }
            }
        }
    };
    let connect = async {
        tokio::time::timeout_at(connect_by, connect)
            .await
            .unwrap_or_else(|_| {
                if refused.load(Ordering::Relaxed) {
                    return Err(Fail::Refused);
                }
                Err(Fail::Error(format!(
                    "not streaming {} s after the peers began to connect (a saturated server \
                     or peers' process)",
                    CONNECT_WITHIN.as_secs()
                )))
            })
    };
    let mut c = match connect.await {
        Ok(c) => c,
        Err(Fail::Refused) => {
            let _ = ready.send(Err(Fail::Refused));
            return;
        }
        Err(Fail::Error(e)) => {
            let _ = ready.send(Err(Fail::Error(format!("peer {i}: {e}"))));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut phase = shared.phase.subscribe();
    let mut seen = 0u8;
    loop {
        let now_phase = *phase.borrow_and_update();
        if now_phase != seen {
            if (1..=2).contains(&now_phase) {
                let mut snaps = shared.snaps.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(slot) = snaps.get_mut(i) {
                    let k = usize::from(now_phase - 1);
                    if k == 1 && slot[0].is_none() {
                        // Closed before the window: nothing to report.
                    } else {
                        slot[k] = Some(c.stats());
                    }
                }
            }
            seen = now_phase;
            if now_phase >= 3 {
                break;
            }
        }
        match c
            .next_event(Instant::now() + Duration::from_millis(50))
            .await
        {
            Ok(Some(WhepEvent::Closed)) | Err(_) => {
                shared.closed_early.fetch_add(1, Ordering::Relaxed);
                // Its window ends here.
                let mut snaps = shared.snaps.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(slot) = snaps.get_mut(i) {
                    if slot[0].is_some() && slot[1].is_none() {
                        slot[1] = Some(c.stats());
                    }
                }
                return;
            }
            Ok(_) => {}
        }
    }
    let _ = c.delete().await;
}
