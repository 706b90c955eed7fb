//! When a client must have sent what its session waits for. A deadline covers a whole command
//! line, not each read, so dribbling a byte now and then (slowloris) does not hold a session
//! forever; message content must keep up a minimum rate (Postfix's `smtpd_min_data_rate`).
//! No I/O: the shell reports what happened and asks when to give up.

use std::time::{Duration, Instant};

use super::listener::ListenerConfig;

#[derive(Debug)]
pub(crate) struct Deadlines {
    command: Duration,
    data: Duration,
    /// Bytes per second of message content; 0: no rate, `data` per read.
    rate: u32,
    stress: Duration,
    /// The deadline of the current wait.
    until: Instant,
    /// When the current command line began to be awaited, or message content was last read:
    /// stress mode allows `stress` from here.
    since: Instant,
    in_data: bool,
    completed: u64,
}

impl Deadlines {
    /// Starts waiting for a command line at `now`; `completed` is the session's count so far.
    pub fn new(config: &ListenerConfig, now: Instant, completed: u64) -> Self {
        Self {
            command: config.command_timeout,
            data: config.data_timeout,
            rate: config.min_data_rate,
            stress: config.stress_timeout,
            until: now + config.command_timeout,
            since: now,
            in_data: false,
            completed,
        }
    }

    /// The session was fed `read` bytes and its actions are done. `in_data`: it now reads
    /// message content; `completed`: its count of lines and messages read to their end.
    pub fn after(&mut self, now: Instant, read: usize, in_data: bool, completed: u64) {
        let new_wait = completed != self.completed;
        if in_data {
            let cap = now + self.data;
            self.until = if !self.in_data || new_wait || self.rate == 0 {
                cap
            } else {
                let earned = Duration::from_secs_f64(read as f64 / f64::from(self.rate));
                (self.until + earned).min(cap)
            };
            self.since = now;
        } else if self.in_data || new_wait {
            self.until = now + self.command;
            self.since = now;
        }
        self.in_data = in_data;
        self.completed = completed;
    }

    /// The relay made the client wait (for memory) this long: not the client's time.
    pub fn paused(&mut self, waited: Duration) {
        self.until += waited;
        self.since += waited;
    }

    /// When to give up on the client; sooner in stress mode.
    pub fn expires(&self, stressed: bool) -> Instant {
        if stressed {
            self.until.min(self.since + self.stress)
        } else {
            self.until
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Host;

    fn config() -> ListenerConfig {
        let mut c = ListenerConfig::new(Host::parse("relay.test").unwrap());
        c.command_timeout = Duration::from_secs(300);
        c.data_timeout = Duration::from_secs(600);
        c.min_data_rate = 500;
        c.stress_timeout = Duration::from_secs(10);
        c
    }

    #[test]
    fn a_command_line_must_be_complete_in_time_however_it_dribbles() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(&config(), t0, 0);
        for minute in 1..5 {
            // A byte a minute, never a whole line: the deadline does not move.
            d.after(t0 + Duration::from_secs(60 * minute), 1, false, 0);
            assert_eq!(d.expires(false), t0 + Duration::from_secs(300));
        }
        // A line completed: the next one gets its own 5 minutes.
        let t1 = t0 + Duration::from_secs(250);
        d.after(t1, 6, false, 1);
        assert_eq!(d.expires(false), t1 + Duration::from_secs(300));
        assert_eq!(d.expires(true), t1 + Duration::from_secs(10));
    }

    #[test]
    fn message_content_must_keep_up_the_minimum_rate() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(&config(), t0, 0);
        d.after(t0, 6, true, 1);
        assert_eq!(d.expires(false), t0 + Duration::from_secs(600));
        // 1 byte a minute earns 2 ms a minute: the session ends about 10 minutes in.
        let mut now = t0;
        for _ in 0..9 {
            now += Duration::from_secs(60);
            d.after(now, 1, true, 1);
        }
        assert!(d.expires(false) < t0 + Duration::from_secs(601));
        // A fast client is never cut off, but earns no more than `data_timeout` ahead.
        let mut d = Deadlines::new(&config(), t0, 0);
        d.after(t0, 6, true, 1);
        d.after(t0 + Duration::from_secs(1), 1 << 30, true, 1);
        assert_eq!(d.expires(false), t0 + Duration::from_secs(601));
        // In stress mode, content must come every 10 seconds.
        assert_eq!(d.expires(true), t0 + Duration::from_secs(11));
        // The end of the message: back to the command timeout.
        d.after(t0 + Duration::from_secs(2), 3, false, 2);
        assert_eq!(d.expires(false), t0 + Duration::from_secs(302));
    }
}
