//! The pacer on a fake clock: time only moves when a test moves it.

use super::*;

const MS: Duration = Duration::from_millis(1);
/// A full-size video datagram (1200-byte RTP packet + SRTP + extensions).
const DGRAM: usize = 1240;

/// `t` rounded up to the grid that starts at `epoch`.
fn on_grid(epoch: Instant, t: Instant) -> Instant {
    let grid = GRID.as_nanos();
    let ticks = t.duration_since(epoch).as_nanos().div_ceil(grid);
    epoch + Duration::from_nanos((ticks * grid) as u64)
}

/// Serve `p` the way the core does: at each due time (rounded to the grid)
/// take what may leave, sent at once. Returns the send time of every item,
/// in order.
fn run(p: &mut Pacer<usize>, start: Instant, limit: usize) -> Vec<(Instant, usize)> {
    let mut sent = Vec::new();
    let mut now = start;
    for _ in 0..limit {
        while let Some(i) = p.pop(now) {
            sent.push((now, i));
        }
        p.sent(now);
        let Some(due) = p.next_due() else {
            return sent;
        };
        let next = on_grid(start, due);
        assert!(next >= now, "due times never go back");
        now = next.max(now);
    }
    panic!("the queue never emptied within {limit} steps");
}

/// Most items sent within any window of `w`.
fn max_in_window(sent: &[(Instant, usize)], w: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sent.len() {
        while sent[hi].0.duration_since(sent[lo].0) >= w {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// A pacer on a grid from `t0` for a 4 Mbit/s stream, `n` full-size
/// datagrams (0, 1, …) queued at `t0`.
fn queued(t0: Instant, n: usize) -> Pacer<usize> {
    let mut p = Pacer::on_grid_of(t0);
    p.set_media_rate(t0, 4_000_000);
    for i in 0..n {
        p.push(t0, DGRAM, i);
    }
    p
}

#[test]
fn a_keyframe_leaves_at_two_and_a_half_times_the_stream_rate_in_small_groups() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    p.set_media_rate(t0, 4_000_000);
    assert_eq!(p.rate_bps(), 10_000_000);
    // A 124 KB keyframe: 100 datagrams handed over at once.
    for i in 0..100 {
        p.push(t0, DGRAM, i);
    }
    let sent = run(&mut p, t0, 10_000);
    assert_eq!(
        sent.iter().map(|s| s.1).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>(),
        "all of it, in order"
    );
    // The first group (15 datagrams) at once, then at the rate:
    // (124 000 − 18 600) B at 1.25 MB/s ≈ 84 ms, in groups of what fills
    // the bucket by the next grid step, each waiting for that step.
    assert_eq!(
        sent.iter().filter(|s| s.0 == t0).count(),
        BURST_BYTES / DGRAM
    );
    let took = sent[99].0 - t0;
    assert!(
        (86 * MS..=100 * MS).contains(&took),
        "took {took:?} of fake time"
    );
    // At most the window within any 5 ms: 15 datagrams.
    let most = max_in_window(&sent, 5 * MS);
    assert!(most <= WINDOW_DATAGRAMS, "{most} datagrams within 5 ms");
    // Whole groups: one wake-up (and one GSO message) serves ten or more.
    let wakeups = {
        let mut t: Vec<Instant> = sent.iter().map(|s| s.0).collect();
        t.dedup();
        t.len()
    };
    assert!(wakeups <= 100 / 10, "{wakeups} wake-ups for 100 datagrams");
}

#[test]
fn a_small_frame_leaves_at_once() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    p.set_media_rate(t0, 4_000_000);
    // A 4 Mbit/s P-frame: twelve datagrams, one group.
    for i in 0..12 {
        p.push(t0, DGRAM, i);
    }
    for i in 0..12 {
        assert_eq!(p.pop(t0), Some(i), "a frame of twelve datagrams");
    }
    assert_eq!(p.pop(t0), None);
    assert_eq!(p.next_due(), None, "nothing queued, no wake-up");
    p.sent(t0);
    // The next frame, 33 ms later, finds the bucket full again.
    let t1 = t0 + 33 * MS;
    for i in 12..40 {
        p.push(t1, DGRAM, i);
    }
    assert_eq!(
        std::iter::from_fn(|| p.pop(t1)).count(),
        BURST_BYTES / DGRAM
    );
}

#[test]
fn low_bitrate_streams_are_paced_at_the_floor_and_fast_ones_at_the_factor() {
    let t0 = Instant::now();
    let mut p: Pacer<()> = Pacer::default();
    assert_eq!(p.rate_bps(), MIN_RATE, "before any measurement");
    p.set_media_rate(t0, 300_000);
    assert_eq!(p.rate_bps(), MIN_RATE);
    p.set_media_rate(t0, 8_000_000);
    assert_eq!(p.rate_bps(), 20_000_000);
}

#[test]
fn a_huge_queue_is_emptied_within_the_max_queue_time() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    p.set_media_rate(t0, 1_000_000); // paced at the 5 Mbit/s floor…
    for i in 0..1000 {
        p.push(t0, DGRAM, i); // …a 1.24 MB frame would take 2 s at that rate.
    }
    let sent = run(&mut p, t0, 100_000);
    assert_eq!(sent.len(), 1000);
    let took = sent[999].0 - t0;
    assert!(
        took <= MAX_QUEUE_TIME + 10 * MS,
        "took {took:?} of fake time"
    );
}

#[test]
fn bytes_waiting_upstream_count_toward_the_max_queue_time() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    p.set_media_rate(t0, 1_000_000);
    for i in 0..30 {
        p.push(t0, DGRAM, i);
    }
    assert_eq!(p.rate_bps(), MIN_RATE, "30 datagrams: the floor will do");
    // The rest of a 1000-datagram frame waits unsealed for room in the queue.
    p.expect(970 * DGRAM);
    let within = (1000 * DGRAM * 8) as f64 / MAX_QUEUE_TIME.as_secs_f64();
    assert!(
        p.rate_bps() as f64 >= within * 0.999,
        "{} bit/s: the whole frame within {MAX_QUEUE_TIME:?} takes {within}",
        p.rate_bps()
    );
}

#[test]
fn a_late_wake_up_sends_one_group_not_what_the_late_time_would_allow() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    p.set_media_rate(t0, 4_000_000);
    for i in 0..40 {
        p.push(t0, DGRAM, i);
    }
    while p.pop(t0).is_some() {}
    p.sent(t0);
    // The driver was starved for 50 ms (62 KB of rate): one window's
    // worth, not 50 datagrams.
    let late = t0 + 50 * MS;
    let n = std::iter::from_fn(|| p.pop(late)).count();
    assert_eq!(n, WINDOW_BYTES / DGRAM);
    p.sent(late);
    let due = p.next_due().expect("more queued");
    assert!(
        due >= late + 5 * MS,
        "the next group waits for the bucket: {:?} after the late one",
        due - late
    );
    let n = std::iter::from_fn(|| p.pop(on_grid(t0, due))).count();
    assert!((1..=WINDOW_BYTES / DGRAM).contains(&n), "{n}");
}

#[test]
fn short_datagrams_and_a_late_driver_never_put_more_than_the_window_in_5_ms() {
    // Frames of 1–40 datagrams of 200–1240 bytes every 33 ms; the driver
    // wakes up to 3 ms late and its send call returns up to 4 ms after the
    // release. The datagrams reach the wire somewhere in between: here, at
    // the release (the earliest, the worst case for bunching).
    let t0 = Instant::now();
    let mut p = Pacer::on_grid_of(t0);
    p.set_media_rate(t0, 4_000_000);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    let mut wire = Vec::new();
    let mut now = t0;
    let mut next_frame = t0;
    for _ in 0..20_000 {
        if now >= next_frame {
            for _ in 0..=rand(40) {
                p.push(now, 200 + rand(1041) as usize, ());
            }
            next_frame += 33 * MS;
        }
        while p.pop(now).is_some() {
            wire.push((now, 0usize));
        }
        let left = now + Duration::from_micros(rand(4_000));
        p.sent(left);
        let due = p.next_due().map_or(next_frame, |d| d.min(next_frame));
        now = due.max(left) + Duration::from_micros(rand(3_000));
        if now > t0 + Duration::from_secs(60) {
            break;
        }
    }
    assert!(wire.len() > 30_000, "{} datagrams", wire.len());
    let most = max_in_window(&wire, 5 * MS);
    assert!(most <= WINDOW_DATAGRAMS, "{most} datagrams within 5 ms");
}

#[test]
fn audio_goes_first_and_takes_its_room_in_the_window() {
    let t0 = Instant::now();
    let mut p = Pacer::on_grid_of(t0);
    p.set_media_rate(t0, 4_000_000);
    // A frame, and two audio packets that were held for it.
    for i in 0..20 {
        p.push(t0, DGRAM, i);
    }
    p.push_urgent(200, 100);
    p.push_urgent(200, 101);
    let out: Vec<usize> = std::iter::from_fn(|| p.pop(t0)).collect();
    assert_eq!(out[..2], [100, 101], "audio first");
    assert_eq!(out.len(), WINDOW_DATAGRAMS, "the window holds both");
    p.sent(t0);
    // Audio that comes while the window is full waits for room, not for
    // the video queue (and no video overtakes it).
    p.push_urgent(200, 102);
    assert_eq!(p.pop(t0 + MS), None);
    let due = p.next_due().expect("audio waits");
    assert_eq!(
        due,
        t0 + 6 * MS,
        "the grid step after the first group leaves the window"
    );
    assert_eq!(p.pop(due), Some(102));
    assert!(p.unsent());
    p.sent(due);
    assert!(!p.unsent());
}

#[test]
fn the_next_group_waits_from_when_the_last_one_left_not_from_its_release() {
    let t0 = Instant::now();
    let mut p = queued(t0, 30);
    while p.pop(t0).is_some() {}
    let on_time = p.next_due().expect("more queued");
    // The driver was descheduled between the release and its send call:
    // the group left 4 ms later.
    let left = t0 + 4 * MS + Duration::from_micros(300);
    assert!(p.unsent());
    p.sent(left);
    assert!(!p.unsent());
    let due = p.next_due().expect("more queued");
    assert!(due > on_time, "{due:?} vs {on_time:?}");
    assert!(
        due - left >= 5 * MS,
        "the window's 5 ms after it left, at least: {:?}",
        due - left
    );
    assert_eq!(on_grid(t0, due), due, "still on the grid");
    // Told twice, or with nothing let go, nothing moves.
    p.sent(left + 10 * MS);
    assert_eq!(p.next_due(), Some(due));
}

#[test]
fn only_video_rtp_is_paced() {
    let rtp = |pt: u8| {
        let mut d = vec![0x80, pt];
        d.extend([0u8; 30]);
        d
    };
    assert_eq!(lane(&rtp(96), Some(111)), Lane::Paced, "video");
    assert_eq!(
        lane(&rtp(0x80 | 96), Some(111)),
        Lane::Paced,
        "video, marker"
    );
    assert_eq!(lane(&rtp(97), Some(111)), Lane::Paced, "RTX");
    for (d, what) in [
        (rtp(111), "audio"),
        (rtp(0x80 | 111), "audio, marker"),
        (rtp(200), "RTCP sender report"),
        (rtp(206), "RTCP feedback"),
        (vec![0x00, 0x01, 0, 0x2c], "STUN"),
        (vec![22, 0xfe, 0xfd, 0], "DTLS"),
        (vec![0x80], "too short to be RTP"),
    ] {
        assert_eq!(lane(&d, Some(111)), Lane::Window, "{what}");
    }
    assert_eq!(
        lane(&rtp(111), None),
        Lane::Paced,
        "no audio track: all RTP is video"
    );
}

#[test]
fn the_media_rate_is_measured_over_whole_windows() {
    let t0 = Instant::now();
    let mut m = RateMeter::default();
    // 500 packets of 1000 bytes over one second: 4 Mbit/s.
    for i in 0..=500u32 {
        m.add(t0 + Duration::from_millis(u64::from(i) * 2), 1000);
        if i < 500 {
            assert_eq!(m.bps(), 0, "no whole window yet");
        }
    }
    let bps = m.bps();
    assert!((3_900_000..=4_100_000).contains(&bps), "{bps}");
}

#[test]
fn peers_fed_apart_within_one_step_fall_due_together() {
    // The core serves peers one after another: the same frame reaches the
    // second peer's pacer some hundreds of µs after the first's.
    let epoch = Instant::now();
    let t = epoch + 10 * GRID + Duration::from_micros(100);
    let later = t + Duration::from_micros(700);
    let (mut a, mut b) = (Pacer::on_grid_of(epoch), Pacer::on_grid_of(epoch));
    // Both groups leave in one send call, which returns at `left`.
    let left = later + Duration::from_micros(200);
    for (p, now) in [(&mut a, t), (&mut b, later)] {
        p.set_media_rate(now, 4_000_000);
        for i in 0..30 {
            p.push(now, DGRAM, i);
        }
        while p.pop(now).is_some() {}
        p.sent(left);
    }
    assert_eq!(a.next_due(), b.next_due(), "one wake-up for both");
    let due = a.next_due().expect("queued");
    assert_eq!(on_grid(epoch, due), due, "on the grid");
    // Served at that step, both send the same group.
    let (na, nb) = (
        std::iter::from_fn(|| a.pop(due)).count(),
        std::iter::from_fn(|| b.pop(due + Duration::from_micros(300))).count(),
    );
    assert_eq!(na, nb);
    assert!(na >= BURST_BYTES / DGRAM, "a whole group: {na}");
}
