//! A mailbox's sending limits: what the provider enforces, so Postern stays under it instead of
//! finding out from a refusal (Exchange Online blocks a mailbox for a day once it passes 10,000
//! recipients in 24 hours). Each provider has presets; a connection may override each limit.

use std::fmt;

use serde::Serialize;

/// Effective limits; 0 means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Limits {
    pub messages_per_minute: u32,
    pub messages_per_day: u32,
    pub recipients_per_day: u32,
    pub recipients_per_message: u32,
}

/// A connection's overrides of its provider's limits (`None`: the preset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitOverrides {
    pub messages_per_minute: Option<u32>,
    pub messages_per_day: Option<u32>,
    pub recipients_per_day: Option<u32>,
    pub recipients_per_message: Option<u32>,
}

/// The names used on the command line (`--limit NAME=N`), in the API and in storage.
pub const LIMIT_NAMES: [&str; 4] = [
    "messages-per-minute",
    "messages-per-day",
    "recipients-per-day",
    "recipients-per-message",
];

impl LimitOverrides {
    pub fn effective(&self, preset: Limits) -> Limits {
        Limits {
            messages_per_minute: self
                .messages_per_minute
                .unwrap_or(preset.messages_per_minute),
            messages_per_day: self.messages_per_day.unwrap_or(preset.messages_per_day),
            recipients_per_day: self.recipients_per_day.unwrap_or(preset.recipients_per_day),
            recipients_per_message: self
                .recipients_per_message
                .unwrap_or(preset.recipients_per_message),
        }
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<u32>> {
        Some(match name {
            "messages-per-minute" => &mut self.messages_per_minute,
            "messages-per-day" => &mut self.messages_per_day,
            "recipients-per-day" => &mut self.recipients_per_day,
            "recipients-per-message" => &mut self.recipients_per_message,
            _ => return None,
        })
    }

    fn values(&self) -> [Option<u32>; 4] {
        [
            self.messages_per_minute,
            self.messages_per_day,
            self.recipients_per_day,
            self.recipients_per_message,
        ]
    }

    /// Parses `name=N[,name=N…]` (also separated by spaces or newlines); `name=preset` clears
    /// an override, `0` means no limit.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut o = Self::default();
        o.apply(text)?;
        Ok(o)
    }

    /// Applies `name=N` items on top of these overrides.
    pub fn apply(&mut self, text: &str) -> Result<(), String> {
        for item in text
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (name, value) = item.split_once('=').ok_or_else(|| {
                format!(
                    "`{item}`: write NAME=N, NAME one of {}",
                    LIMIT_NAMES.join(", ")
                )
            })?;
            let name = name.trim();
            let slot = self.slot(name).ok_or_else(|| {
                format!(
                    "unknown limit `{name}`: use one of {}",
                    LIMIT_NAMES.join(", ")
                )
            })?;
            *slot = match value.trim() {
                "preset" | "default" => None,
                v => Some(v.parse::<u32>().map_err(|_| {
                    format!("`{name}={v}`: use a whole number (0 for no limit) or `preset`")
                })?),
            };
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.values().iter().all(Option::is_none)
    }
}

/// `name=N,…` for the overrides that are set (the stored and displayed form).
impl fmt::Display for LimitOverrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, v) in LIMIT_NAMES.iter().zip(self.values()) {
            if let Some(v) = v {
                if !first {
                    f.write_str(",")?;
                }
                write!(f, "{name}={v}")?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |n: u32| {
            if n == 0 {
                "no limit".to_string()
            } else {
                n.to_string()
            }
        };
        write!(
            f,
            "{}/min, {} messages/day, {} recipients/day, {} recipients/message",
            show(self.messages_per_minute),
            show(self.messages_per_day),
            show(self.recipients_per_day),
            show(self.recipients_per_message)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_round_trip_and_fall_back_to_the_preset() {
        let o = LimitOverrides::parse("messages-per-minute=10, recipients-per-day=0").unwrap();
        assert_eq!(o.to_string(), "messages-per-minute=10,recipients-per-day=0");
        assert_eq!(LimitOverrides::parse(&o.to_string()).unwrap(), o);
        let preset = Limits {
            messages_per_minute: 30,
            messages_per_day: 0,
            recipients_per_day: 10_000,
            recipients_per_message: 500,
        };
        let e = o.effective(preset);
        assert_eq!(
            (
                e.messages_per_minute,
                e.recipients_per_day,
                e.recipients_per_message
            ),
            (10, 0, 500)
        );
        let mut o = o;
        o.apply("messages-per-minute=preset").unwrap();
        assert_eq!(o.effective(preset).messages_per_minute, 30);
        assert!(LimitOverrides::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_limits_name_what_to_write() {
        let e = LimitOverrides::parse("per-hour=5").unwrap_err();
        assert!(
            e.contains("unknown limit `per-hour`") && e.contains("messages-per-minute"),
            "{e}"
        );
        let e = LimitOverrides::parse("messages-per-day=lots").unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = LimitOverrides::parse("messages-per-day").unwrap_err();
        assert!(e.contains("NAME=N"), "{e}");
    }
}
