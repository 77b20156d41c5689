//! The shaper on a fake clock: every time is a base instant plus an offset,
//! and the driver polls exactly when the shaper says something is due.

use std::time::{Duration, Instant};

use super::shaper::{Impairment, Rate, Shaper};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn packet(seq: u32, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(4)];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[0], p[1], p[2], p[3]])
}

/// Feed `arrivals` (offset, packet) and poll at every due time until
/// `until`; returns (offset of delivery, packet) in delivery order.
fn drive(
    s: &mut Shaper,
    t0: Instant,
    arrivals: Vec<(Duration, Vec<u8>)>,
    until: Duration,
) -> Vec<(Duration, Vec<u8>)> {
    let mut out = Vec::new();
    let mut arrivals = arrivals.into_iter().peekable();
    loop {
        let next_arrival = arrivals.peek().map(|(t, _)| t0 + *t);
        let next = match (next_arrival, s.next_due()) {
            (Some(a), Some(d)) => a.min(d),
            (a, d) => match a.or(d) {
                Some(t) => t,
                None => break,
            },
        };
        if next > t0 + until {
            break;
        }
        while let Some(p) = s.poll(next) {
            out.push((next - t0, p));
        }
        if next_arrival == Some(next) {
            if let Some((_, p)) = arrivals.next() {
                s.push(next, p);
            }
        }
    }
    out
}

/// `n` packets of `size` bytes, one every `every`.
fn steady(n: u32, every: Duration, size: usize) -> Vec<(Duration, Vec<u8>)> {
    (0..n).map(|i| (every * i, packet(i, size))).collect()
}

#[test]
fn seeded_loss_is_within_half_a_percent_of_the_setting_and_repeats() {
    for (loss, seed) in [(0.02, 1), (0.02, 16), (0.10, 3), (0.5, 99)] {
        let t0 = Instant::now();
        let mut s = Shaper::new(Impairment::NONE.with_loss(loss), seed).unwrap();
        let out = drive(&mut s, t0, steady(10_000, ms(1), 100), ms(20_000));
        let st = s.stats();
        let rate = st.lost as f64 / 10_000.0;
        assert!(
            (rate - loss).abs() <= 0.005,
            "seed {seed}: lost {rate} of a setting of {loss}"
        );
        assert_eq!(st.received, 10_000);
        assert_eq!(st.forwarded + st.lost, 10_000);
        assert_eq!(out.len() as u64, st.forwarded);
        // The same seed loses the same packets.
        let mut again = Shaper::new(Impairment::NONE.with_loss(loss), seed).unwrap();
        let out2 = drive(&mut again, t0, steady(10_000, ms(1), 100), ms(20_000));
        let kept = |o: &[(Duration, Vec<u8>)]| o.iter().map(|(_, p)| seq_of(p)).collect::<Vec<_>>();
        assert_eq!(kept(&out), kept(&out2));
    }
    let kept = |seed| {
        let mut s = Shaper::new(Impairment::NONE.with_loss(0.1), seed).unwrap();
        drive(&mut s, Instant::now(), steady(1000, ms(1), 100), ms(5000))
            .into_iter()
            .map(|(_, p)| seq_of(&p))
            .collect::<Vec<_>>()
    };
    assert_ne!(kept(1), kept(2), "another seed, other losses");
}

#[test]
fn a_fixed_delay_is_applied_exactly() {
    let t0 = Instant::now();
    let mut s = Shaper::new(Impairment::delay(ms(40)), 1).unwrap();
    let out = drive(&mut s, t0, steady(100, ms(3), 200), ms(10_000));
    assert_eq!(out.len(), 100);
    for (at, p) in &out {
        let sent = ms(3) * seq_of(p);
        assert_eq!(*at - sent, ms(40), "packet {}", seq_of(p));
    }
    // Nothing comes out early.
    let mut s = Shaper::new(Impairment::delay(ms(40)), 1).unwrap();
    s.push(t0, packet(0, 10));
    assert_eq!(s.poll(t0 + ms(39)), None);
    assert_eq!(s.next_due(), Some(t0 + ms(40)));
    assert!(s.poll(t0 + ms(40)).is_some());
}

#[test]
fn jitter_varies_the_delay_but_never_reorders() {
    let t0 = Instant::now();
    let cfg = Impairment::delay(ms(40)).with_jitter(ms(20));
    let mut s = Shaper::new(cfg, 5).unwrap();
    let out = drive(&mut s, t0, steady(2000, ms(1), 100), ms(10_000));
    assert_eq!(out.len(), 2000);
    let seqs: Vec<u32> = out.iter().map(|(_, p)| seq_of(p)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "reordered");
    let delays: Vec<Duration> = out.iter().map(|(at, p)| *at - ms(1) * seq_of(p)).collect();
    let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
    assert!(*lo >= ms(20) && *hi <= ms(60), "{lo:?}..{hi:?}");
    assert!(*hi - *lo > ms(15), "the delays hardly vary: {lo:?}..{hi:?}");

    // Asked for, jitter does reorder.
    let mut s = Shaper::new(
        Impairment {
            reorder: true,
            ..cfg
        },
        5,
    )
    .unwrap();
    let out = drive(&mut s, t0, steady(2000, ms(1), 100), ms(10_000));
    let seqs: Vec<u32> = out.iter().map(|(_, p)| seq_of(p)).collect();
    assert!(seqs.windows(2).any(|w| w[0] > w[1]), "never reordered");
    let delays: Vec<Duration> = out.iter().map(|(at, p)| *at - ms(1) * seq_of(p)).collect();
    assert!(delays.iter().all(|d| *d >= ms(20) && *d <= ms(60)));
}

#[test]
fn a_rate_cap_delivers_about_the_rate_and_drops_at_the_tail() {
    let t0 = Instant::now();
    // 2 Mbit/s offered (1200 B every 4.8 ms) into a 1 Mbit/s cap for 10 s.
    let cfg = Impairment::NONE
        .with_rate(Rate::bits_per_sec(1_000_000))
        .with_queue_limit(20);
    let mut s = Shaper::new(cfg, 1).unwrap();
    let arrivals = steady(2084, Duration::from_micros(4800), 1200);
    let out = drive(&mut s, t0, arrivals, ms(10_000));
    let bits = out.iter().map(|(_, p)| p.len() as f64 * 8.0).sum::<f64>();
    let rate = bits / 10.0;
    assert!(
        (rate - 1_000_000.0).abs() < 20_000.0,
        "delivered {rate} bit/s through a 1 Mbit/s cap"
    );
    let st = s.stats();
    assert!(st.queue_dropped > 900, "{st:?}");
    assert_eq!(st.lost, 0);
    // Drop-tail: what got through is in order.
    let seqs: Vec<u32> = out.iter().map(|(_, p)| seq_of(p)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Back to back, 1200 B at 1 Mbit/s are 9.6 ms apart once the burst is spent.
    let gaps: Vec<Duration> = out[10..20].windows(2).map(|w| w[1].0 - w[0].0).collect();
    for g in gaps {
        assert!((g.as_secs_f64() - 0.0096).abs() < 1e-6, "{g:?}");
    }
}

#[test]
fn a_burst_into_a_short_queue_is_cut_at_the_tail_and_counted() {
    let t0 = Instant::now();
    let cfg = Impairment::NONE
        .with_rate(Rate::bits_per_sec(1_000_000))
        .with_queue_limit(10);
    let mut s = Shaper::new(cfg, 1).unwrap();
    for i in 0..100 {
        s.push(t0, packet(i, 1000));
    }
    let st = s.stats();
    // Three leave at once with the 3000-byte bucket; ten wait; the rest are dropped.
    assert_eq!(s.queued(), 10);
    assert_eq!(st.queue_dropped, 87);
    let out = drive(&mut s, t0, Vec::new(), ms(1000));
    let seqs: Vec<u32> = out.iter().map(|(_, p)| seq_of(p)).collect();
    assert_eq!(seqs, (0..13).collect::<Vec<_>>());
}

#[test]
fn new_settings_take_effect_at_once() {
    let t0 = Instant::now();
    let mut s = Shaper::new(Impairment::delay(ms(40)).with_loss(1.0), 1).unwrap();
    let first = drive(&mut s, t0, steady(100, ms(1), 100), ms(200));
    assert!(first.is_empty());
    assert_eq!(s.stats().lost, 100);

    // Loss and delay lifted: the next packet goes straight through.
    s.set(t0 + ms(200), Impairment::NONE).unwrap();
    s.push(t0 + ms(200), packet(1000, 100));
    assert_eq!(s.poll(t0 + ms(200)).map(|p| seq_of(&p)), Some(1000));

    // A cap with a queue behind it: lifting it lets the queue go at once.
    let cfg = Impairment::NONE.with_rate(Rate::bits_per_sec(100_000));
    s.set(t0 + ms(300), cfg).unwrap();
    for i in 0..20 {
        s.push(t0 + ms(300), packet(i, 1000));
    }
    assert_eq!(s.queued(), 17, "three go with the burst");
    s.set(t0 + ms(301), Impairment::NONE).unwrap();
    assert_eq!(s.queued(), 0);
    let mut n = 0;
    while s.poll(t0 + ms(301)).is_some() {
        n += 1;
    }
    assert_eq!(n, 20, "all twenty are out by the next poll");

    // A 3 s burst of 10 % loss, then none.
    let mut s = Shaper::new(Impairment::NONE, 7).unwrap();
    s.set(t0, Impairment::NONE.with_loss(0.1)).unwrap();
    drive(&mut s, t0, steady(3000, ms(1), 100), ms(3000));
    let during = s.stats().lost;
    assert!((250..=350).contains(&during), "{during}");
    s.set(t0 + ms(3000), Impairment::NONE).unwrap();
    let later: Vec<_> = steady(1000, ms(1), 100)
        .into_iter()
        .map(|(t, p)| (t + ms(3000), p))
        .collect();
    drive(&mut s, t0, later, ms(5000));
    assert_eq!(s.stats().lost, during);
}

#[test]
fn settings_that_mean_nothing_are_refused() {
    for bad in [
        Impairment::NONE.with_loss(1.5),
        Impairment::NONE.with_loss(f64::NAN),
        Impairment::NONE.with_loss(-0.1),
        Impairment::NONE.with_rate(Rate::bits_per_sec(0)),
        Impairment::NONE.with_queue_limit(0),
    ] {
        assert!(Shaper::new(bad, 1).is_err(), "{bad:?}");
        let mut s = Shaper::new(Impairment::NONE, 1).unwrap();
        assert!(s.set(Instant::now(), bad).is_err(), "{bad:?}");
        assert_eq!(s.settings(), Impairment::NONE);
    }
}
