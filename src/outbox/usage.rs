//! What a connection has sent in the last 24 hours, in ten-minute slots, to keep it under its
//! daily limits. Sans-IO: the worker seeds it from the store once (so a restart remembers) and
//! adds every message it sends.
//!
//! Slots of ten minutes bound the memory (144 per connection, however much it sends) at the
//! price of releasing room up to ten minutes late: never early, so the provider's limit holds.

use std::collections::VecDeque;

use crate::domain::Limits;

const SLOT_MS: i64 = 10 * 60_000;
const DAY_MS: i64 = 24 * 60 * 60_000;

/// A rolling 24-hour window of messages and recipients sent.
#[derive(Debug, Default, Clone)]
pub struct Window {
    /// (slot, messages, recipients), oldest first; at most 144 entries.
    minutes: VecDeque<(i64, u64, u64)>,
    messages: u64,
    recipients: u64,
}

impl Window {
    fn expire(&mut self, now_ms: i64) {
        let first_kept = (now_ms - DAY_MS).div_euclid(SLOT_MS) + 1;
        while let Some(&(m, msgs, rcpts)) = self.minutes.front() {
            if m >= first_kept {
                break;
            }
            self.messages -= msgs;
            self.recipients -= rcpts;
            self.minutes.pop_front();
        }
    }

    /// Counts `messages` with `recipients` in all, sent at `at_ms`.
    pub fn add(&mut self, at_ms: i64, messages: u64, recipients: u64) {
        let minute = at_ms.div_euclid(SLOT_MS);
        match self.minutes.back_mut() {
            Some(last) if last.0 == minute => {
                last.1 += messages;
                last.2 += recipients;
            }
            Some(last) if last.0 > minute => {
                // Seeded out of order: keep the order by inserting in place.
                let at = self.minutes.partition_point(|e| e.0 < minute);
                match self.minutes.get_mut(at) {
                    Some(e) if e.0 == minute => {
                        e.1 += messages;
                        e.2 += recipients;
                    }
                    _ => self.minutes.insert(at, (minute, messages, recipients)),
                }
            }
            _ => self.minutes.push_back((minute, messages, recipients)),
        }
        self.messages += messages;
        self.recipients += recipients;
    }

    /// When one more message to `recipients` fits the daily limits: `None` now, else the
    /// earliest time enough of the window has rolled off.
    pub fn room_at(&mut self, now_ms: i64, limits: &Limits, recipients: u64) -> Option<i64> {
        self.expire(now_ms);
        // A message bigger than a whole day's allowance goes once the window is empty.
        let need = |limit: u32, have: u64, adding: u64| {
            let limit = u64::from(limit);
            (limit > 0 && have + adding.min(limit) > limit)
                .then(|| have + adding.min(limit) - limit)
        };
        let mut at: Option<i64> = None;
        for (excess, pick) in [
            (need(limits.messages_per_day, self.messages, 1), 1),
            (
                need(limits.recipients_per_day, self.recipients, recipients),
                2,
            ),
        ] {
            let Some(mut excess) = excess else { continue };
            for &(minute, msgs, rcpts) in &self.minutes {
                let freed = if pick == 1 { msgs } else { rcpts };
                if freed >= excess {
                    let t = (minute + 1) * SLOT_MS + DAY_MS;
                    at = Some(at.map_or(t, |a: i64| a.max(t)));
                    break;
                }
                excess -= freed;
            }
        }
        at
    }

    /// Whether `messages` messages with `recipients` recipients in all fit the limits now.
    pub fn has_room(
        &mut self,
        now_ms: i64,
        limits: &Limits,
        messages: u64,
        recipients: u64,
    ) -> bool {
        self.expire(now_ms);
        let fits =
            |limit: u32, have: u64, adding: u64| limit == 0 || have + adding <= u64::from(limit);
        fits(limits.messages_per_day, self.messages, messages)
            && fits(limits.recipients_per_day, self.recipients, recipients)
    }

    pub fn recipients(&self) -> u64 {
        self.recipients
    }

    pub fn messages(&self) -> u64 {
        self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn limits(per_day_msgs: u32, per_day_rcpts: u32) -> Limits {
        Limits {
            messages_per_day: per_day_msgs,
            recipients_per_day: per_day_rcpts,
            ..Limits::default()
        }
    }

    #[test]
    fn no_limit_always_has_room() {
        let mut w = Window::default();
        w.add(T0, 1_000_000, 1_000_000);
        assert_eq!(w.room_at(T0, &Limits::default(), 500), None);
    }

    #[test]
    fn the_recipient_limit_waits_until_enough_of_the_window_rolls_off() {
        let l = limits(0, 10_000);
        let mut w = Window::default();
        w.add(T0, 60, 6_000);
        w.add(T0 + 3_600_000, 40, 4_000);
        assert_eq!(w.recipients(), 10_000);
        // Full: one more recipient waits until the first hour's 6,000 roll off.
        let at = w.room_at(T0 + 7_200_000, &l, 1).unwrap();
        assert_eq!(at, (T0.div_euclid(SLOT_MS) + 1) * SLOT_MS + DAY_MS);
        // 7,000 need the second batch gone too.
        let at = w.room_at(T0 + 7_200_000, &l, 7_000).unwrap();
        assert!(at > T0 + 3_600_000 + DAY_MS);
        // A day later, the first batch has gone: 6,000 fit again.
        assert_eq!(w.room_at(T0 + DAY_MS + SLOT_MS, &l, 6_000), None);
        assert_eq!(w.recipients(), 4_000);
    }

    #[test]
    fn the_message_limit_counts_messages_not_recipients() {
        let l = limits(2_000, 0);
        let mut w = Window::default();
        for i in 0..2_000 {
            w.add(T0 + i * 1_000, 1, 100);
        }
        assert!(w.room_at(T0 + 2_000_000, &l, 1).is_some());
        assert_eq!(
            w.room_at(T0 + DAY_MS, &l, 1),
            None,
            "the first slot's messages have rolled off"
        );
    }

    #[test]
    fn room_for_two_messages_counts_both_against_each_limit() {
        let mut w = Window::default();
        w.add(T0, 8, 98);
        // Two more messages with 2 recipients in all fit 10 messages and 100 recipients a day.
        assert!(w.has_room(T0, &limits(10, 100), 2, 2));
        assert!(!w.has_room(T0, &limits(9, 100), 2, 2), "messages");
        assert!(!w.has_room(T0, &limits(10, 100), 2, 3), "recipients");
        assert!(
            w.has_room(T0, &Limits::default(), 2, 1_000_000),
            "no limits"
        );
        // A day later the window is empty again.
        assert!(w.has_room(T0 + DAY_MS + SLOT_MS, &limits(2, 2), 2, 2));
    }

    #[test]
    fn one_message_bigger_than_the_daily_allowance_goes_on_an_empty_window() {
        let l = limits(0, 100);
        let mut w = Window::default();
        assert_eq!(w.room_at(T0, &l, 250), None);
        w.add(T0, 1, 250);
        assert!(w.room_at(T0, &l, 1).is_some());
    }

    #[test]
    fn seeding_out_of_order_keeps_the_window_right() {
        let mut w = Window::default();
        w.add(T0 + 2 * SLOT_MS, 1, 1);
        w.add(T0, 1, 1);
        w.add(T0 + 2 * SLOT_MS, 1, 1);
        assert_eq!((w.messages(), w.minutes.len()), (3, 2));
        w.room_at(T0 + DAY_MS + SLOT_MS, &Limits::default(), 0);
        assert_eq!(w.messages(), 2, "the oldest slot rolled off first");
    }
}
