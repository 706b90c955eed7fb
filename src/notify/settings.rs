//! `[notifications]`: where Postern tells the admin (each key also `POSTERN_NOTIFICATIONS__KEY`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// POST each event as JSON to this URL (signed with `webhook_secret_file`).
    pub webhook_url: Option<String>,
    /// A file holding the shared secret for the `Postern-Signature` header (required with a webhook).
    pub webhook_secret_file: Option<PathBuf>,
    /// Send each event by e-mail through this connection...
    pub email_connection: Option<String>,
    /// ...to these addresses.
    pub email_to: Vec<String>,
    /// Run this program (argv; no shell) with the event's JSON on stdin.
    pub command: Vec<String>,
    /// The command is killed after this many seconds.
    pub command_timeout_secs: u64,
    /// How often the store is checked for state changes.
    pub poll_secs: u64,
    /// Tell the admin when the oldest queued message is older than this (minutes; 0 = never).
    pub queue_age_minutes: u64,
    /// Webhook tries per event (with backoff 1 s, 2 s, 4 s... between them).
    pub webhook_attempts: u32,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret_file: None,
            email_connection: None,
            email_to: Vec::new(),
            command: Vec::new(),
            command_timeout_secs: 10,
            poll_secs: 30,
            queue_age_minutes: 60,
            webhook_attempts: 4,
        }
    }
}

impl NotificationSettings {
    /// What is wrong with the section, as (key, message).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(u) = &self.webhook_url {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                _ => {
                    return Some((
                        "notifications.webhook_url",
                        format!("`{u}` is not an http(s) URL"),
                    ));
                }
            }
            if self.webhook_secret_file.is_none() {
                return Some((
                    "notifications.webhook_secret_file",
                    "a webhook needs a shared secret: put one in a file (e.g. `openssl rand -hex 32 > webhook.secret`) and name it here".into(),
                ));
            }
        }
        if self.email_connection.is_some() == self.email_to.is_empty() {
            return Some((
                "notifications.email_to",
                "email_connection and email_to go together: name the connection to send through and at least one address".into(),
            ));
        }
        if let Some(bad) = self
            .email_to
            .iter()
            .find(|a| crate::domain::EmailAddress::parse(a).is_err())
        {
            return Some((
                "notifications.email_to",
                format!("`{bad}` is not an e-mail address"),
            ));
        }
        if self.poll_secs == 0 || self.command_timeout_secs == 0 || self.webhook_attempts == 0 {
            return Some((
                "notifications.poll_secs",
                "poll_secs, command_timeout_secs and webhook_attempts must be at least 1".into(),
            ));
        }
        None
    }

    pub fn any_channel(&self) -> bool {
        self.webhook_url.is_some() || self.email_connection.is_some() || !self.command.is_empty()
    }
}
