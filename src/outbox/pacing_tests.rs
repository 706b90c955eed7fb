use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;

#[test]
fn slots_are_spaced_by_the_interval_and_an_idle_gap_is_not_saved_up() {
    let t0 = Instant::now();
    let i = Duration::from_secs(2);
    let mut p = Pacer::default();
    assert_eq!(p.reserve(t0, 30), Some(t0));
    assert_eq!(
        p.reserve(t0, 30),
        Some(t0 + i),
        "a second message at once waits one interval"
    );
    p.end(t0 + Duration::from_millis(10));
    p.end(t0 + i + Duration::from_millis(10));
    let later = t0 + Duration::from_secs(120);
    assert_eq!(
        p.reserve(later, 30),
        Some(later),
        "after a quiet minute the next message goes at once, without a burst allowance"
    );
}

#[test]
fn the_message_after_a_full_minute_waits_for_the_first_ones_end_plus_a_minute() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    // Two a minute: the first answered slowly (1.5 s), the second at once.
    assert_eq!(p.reserve(t0, 2), Some(t0));
    p.end(t0 + Duration::from_millis(1500));
    let s2 = p.reserve(t0 + Duration::from_secs(2), 2).unwrap();
    assert_eq!(s2, t0 + Duration::from_secs(30));
    p.end(s2);
    // By spacing alone the third would go at 60 s, when the provider may still count the first
    // (taken at up to 1.5 s) in the same minute.
    assert_eq!(
        p.reserve(s2, 2),
        Some(t0 + Duration::from_millis(61_500)),
        "a minute after the first one's end"
    );
}

#[test]
fn no_more_than_the_limit_are_under_way_at_once() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    assert!(p.reserve(t0, 2).is_some());
    assert!(p.reserve(t0, 2).is_some());
    assert_eq!(p.reserve(t0, 2), None, "both of the minute's under way");
    p.end(t0 + Duration::from_secs(1));
    assert!(
        p.reserve(t0 + Duration::from_secs(1), 2).is_some(),
        "one ended: one more may be reserved (it starts a minute after that end)"
    );
}

#[test]
fn a_connection_idle_for_a_minute_keeps_no_pacer_and_sends_at_once_again() {
    let t0 = Instant::now();
    let mut p = Pacers::default();
    assert_eq!(p.reserve(7, t0, 30), Some(t0));
    p.end(7, t0 + Duration::from_millis(100));
    assert!(p.reserve(8, t0 + Duration::from_secs(1), 30).is_some());
    assert_eq!(p.len(), 2);
    let later = t0 + Duration::from_secs(61);
    assert_eq!(p.reserve(9, later, 30), Some(later));
    assert_eq!(
        p.len(),
        2,
        "7 was idle for a minute and is gone; 8 is still under way; 9 is new"
    );
    assert_eq!(p.reserve(7, later, 30), Some(later), "7 sends at once");
}

/// A pseudo-random sequence (xorshift), so that every run simulates the same answers.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Simulates `senders` senders of one connection sending `count` messages under `limit` a minute,
/// each attempt answered after a random time up to `max_answer_ms`, the provider taking the
/// message at a random point of that time. Returns the starts and the provider's arrival times,
/// in ms from the first start.
fn simulate(limit: u32, senders: usize, count: usize, max_answer_ms: u64, seed: u64) -> Sim {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ms = |t: Instant| t.duration_since(t0).as_millis() as u64;
    let mut rng = Rng(seed);
    let mut p = Pacer::default();
    // (time, event): 0 = a sender asks for a slot, 1 = an attempt ends.
    let mut events: BinaryHeap<Reverse<(u64, u8, usize)>> =
        (0..senders).map(|s| Reverse((0, 0, s))).collect();
    let mut waiting = Vec::new();
    let mut sim = Sim::default();
    while let Some(Reverse((now, kind, sender))) = events.pop() {
        if kind == 1 {
            p.end(at(now));
            events.push(Reverse((now, 0, sender)));
            for s in waiting.drain(..) {
                events.push(Reverse((now, 0, s)));
            }
            continue;
        }
        if sim.starts.len() == count {
            continue;
        }
        let Some(slot) = p.reserve(at(now), limit) else {
            waiting.push(sender);
            continue;
        };
        let start = ms(slot);
        let answer = rng.below(max_answer_ms + 1);
        sim.starts.push(start);
        sim.arrivals.push(start + rng.below(answer + 1));
        events.push(Reverse((start + answer, 1, sender)));
    }
    sim.arrivals.sort_unstable();
    sim
}

#[derive(Default)]
struct Sim {
    starts: Vec<u64>,
    arrivals: Vec<u64>,
}

impl Sim {
    /// The most arrivals within any 60 s.
    fn most_in_a_minute(&self) -> usize {
        let a = &self.arrivals;
        (0..a.len())
            .map(|i| a[i..].iter().take_while(|&&t| t < a[i] + 60_000).count())
            .max()
            .unwrap_or(0)
    }
}

#[test]
fn with_answers_of_any_speed_no_minute_holds_more_than_the_limit() {
    for (limit, senders, answer_ms) in [
        (30, 1, 1_000),
        (30, 3, 3_000),
        (2, 3, 20_000),
        (600, 3, 500),
    ] {
        for seed in 1..=20 {
            let count = limit as usize * 5;
            let sim = simulate(limit, senders, count, answer_ms, seed);
            assert_eq!(sim.starts.len(), count);
            assert!(
                sim.most_in_a_minute() <= limit as usize,
                "limit {limit}, {senders} sender(s), answers up to {answer_ms} ms, seed {seed}: {} in a minute",
                sim.most_in_a_minute()
            );
            let interval = 60_000 / u64::from(limit);
            let mut starts = sim.starts.clone();
            starts.sort_unstable();
            assert!(
                starts.windows(2).all(|w| w[1] - w[0] >= interval),
                "starts at least an interval apart"
            );
        }
    }
}

#[test]
fn with_quick_answers_the_pace_stays_within_two_per_cent_of_the_limit() {
    // 300 at 30 a minute, answers up to 1 s: spacing alone takes 598 s; the minute rule adds at
    // most the answer time once per 30 messages.
    for seed in 1..=10 {
        let sim = simulate(30, 3, 300, 1_000, seed);
        let last = *sim.arrivals.last().unwrap();
        assert!(
            (598_000..=612_000).contains(&last),
            "seed {seed}: last arrival at {last} ms for 600 s ± 2 %"
        );
    }
}
