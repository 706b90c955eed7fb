//! Telling the admin before mail stops: a background task that turns state changes in the store
//! (a connection needing re-authorization or recovering, a secret about to expire, a failed
//! message, mail waiting too long) into events, and sends each through every configured channel
//! (a signed webhook, an e-mail through a connection, a command).
//!
//! It polls the store rather than hooking the places where a status changes, because those
//! changes also come from other processes (`postern connection authorize` or `token` run beside
//! `serve`) and from the clock (a secret's expiry): the store is the one place that sees them
//! all. The last state seen is kept in the store with each event, so a restart neither repeats
//! nor loses one.

mod channels;
pub mod detect;
mod settings;
pub mod webhook;

use std::time::Duration;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::oauth::TokenManager;
use crate::settings::DeliverySettings;
use crate::store::notifications::Notification;
use crate::store::{Store, StoreError};

pub use channels::ChannelResult;
pub use settings::NotificationSettings;

/// The version of the webhook and command JSON; bumped only when a field changes meaning or goes.
pub const SCHEMA_VERSION: u32 = 1;

/// The JSON an event is sent as (webhook body, command stdin).
pub fn event_json(n: &Notification) -> serde_json::Value {
    let at = chrono::DateTime::from_timestamp(n.at, 0).unwrap_or_default();
    serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "id": n.id,
        "event": n.event,
        "connection": n.connection,
        "reason": n.reason,
        "fix": n.fix,
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifications.webhook_secret_file {path}: {source}")]
    SecretFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("notifications.webhook_secret_file {0} is empty: put the shared secret in it")]
    EmptySecret(std::path::PathBuf),
    #[error(transparent)]
    Http(#[from] crate::oauth::HttpClientError),
}

/// How often every connection is looked at; in between, only those changed since the last look.
/// The time-based states (a secret's expiry warning by the day, a refresh token idle for 60
/// days) move slowly, so an hour late is on time; with 10,000 connections the whole table is
/// a quarter of a second of work, which every 30 s was most of an idle instance's CPU.
const FULL_LOOK_EVERY: Duration = Duration::from_secs(3600);

/// Where the last look left off.
#[derive(Debug, Default)]
struct Cursor {
    /// When every connection was last looked at.
    full_at: Option<std::time::Instant>,
    /// When (s) the last look began: changes from then on are the next look's.
    since: i64,
}

/// The configured channels and what they need.
pub struct Notifier {
    store: Store,
    settings: NotificationSettings,
    channels: channels::Channels,
    cursor: std::sync::Mutex<Cursor>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The webhook secret stays out of debug output.
        f.debug_struct("Notifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(
        store: Store,
        settings: NotificationSettings,
        tokens: TokenManager,
        delivery: DeliverySettings,
    ) -> Result<Self, NotifyError> {
        let secret = match &settings.webhook_secret_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| NotifyError::SecretFile {
                        path: path.clone(),
                        source,
                    })?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(NotifyError::EmptySecret(path.clone()));
                }
                Some(SecretString::from(text.to_string()))
            }
            None => None,
        };
        let channels = channels::Channels {
            http: crate::oauth::http_client(Duration::from_secs(10))?,
            webhook_secret: secret,
            tokens,
            delivery,
            store: store.clone(),
            settings: settings.clone(),
        };
        Ok(Self {
            store,
            settings,
            channels,
            cursor: std::sync::Mutex::default(),
        })
    }

    /// Records the state changes since the last step as events.
    pub async fn detect(&self) -> Result<usize, StoreError> {
        let began = chrono::Utc::now().timestamp();
        let (full, since) = {
            let c = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
            let full = c.full_at.is_none_or(|at| at.elapsed() >= FULL_LOOK_EVERY);
            (full, c.since)
        };
        // A second of overlap: `updated_at` is in seconds.
        let since = (!full).then_some(since - 1);
        let conns = self.store.watched_connections(since).await?;
        let mail = self.store.mail_watch().await?;
        let states = self.store.notification_states().await?;
        let now = chrono::Utc::now();
        let changes = detect::transitions(
            &conns,
            &mail,
            &states,
            now.date_naive(),
            now.timestamp_millis(),
            self.settings.queue_age_minutes,
        );
        let mut events = 0;
        for t in changes {
            let moved = self
                .store
                .record_transition(
                    &t.subject,
                    t.topic,
                    t.prev.as_deref(),
                    &t.state,
                    t.event.as_ref(),
                )
                .await?;
            events += usize::from(moved && t.event.is_some());
        }
        let mut c = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        if full {
            c.full_at = Some(std::time::Instant::now());
        }
        c.since = began;
        Ok(events)
    }

    /// Sends every pending event through every channel that has not delivered it yet.
    pub async fn dispatch(&self) -> Result<(), StoreError> {
        for n in self.store.pending_notifications(50).await? {
            let done: Vec<String> = self
                .store
                .notification_attempts(n.id)
                .await?
                .into_iter()
                .filter(|a| a.ok)
                .map(|a| a.channel)
                .collect();
            self.channels.send_all(&n, &done).await;
            self.store.finish_notification(n.id).await?;
        }
        Ok(())
    }

    /// Sends a sample event through every channel at once, without recording it.
    pub async fn test(&self) -> Vec<ChannelResult> {
        let sample = Notification {
            id: 0,
            event: "test".into(),
            connection: None,
            reason: "a test from `postern notifications test`".into(),
            fix: "Nothing to do: this channel works.".into(),
            at: chrono::Utc::now().timestamp(),
            done: false,
        };
        self.channels.send_sample(&sample).await
    }

    /// Detects and dispatches every `poll_secs` until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let every = Duration::from_secs(self.settings.poll_secs);
        loop {
            if let Err(e) = self.detect().await {
                tracing::error!(error = %e, "notifications: cannot read the store");
            }
            if let Err(e) = self.dispatch().await {
                tracing::error!(error = %e, "notifications: cannot record a delivery");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
