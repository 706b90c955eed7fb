//! Sending one event through each configured channel, recording every attempt.

use std::process::Stdio;
use std::time::Duration;

use secrecy::SecretString;
use tokio::io::AsyncWriteExt;

use super::{NotificationSettings, event_json, webhook};
use crate::domain::EmailAddress;
use crate::oauth::TokenManager;
use crate::outbox::direct::{Draft, Outgoing, send_now};
use crate::settings::DeliverySettings;
use crate::store::Store;
use crate::store::notifications::Notification;

/// One channel's answer, as `notifications test` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelResult {
    pub channel: &'static str,
    pub ok: bool,
    pub detail: String,
}

pub(super) struct Channels {
    pub http: reqwest::Client,
    pub webhook_secret: Option<SecretString>,
    pub tokens: TokenManager,
    pub delivery: DeliverySettings,
    pub store: Store,
    pub settings: NotificationSettings,
}

impl Channels {
    /// Every channel not in `done`; each attempt is recorded and logged.
    pub async fn send_all(&self, n: &Notification, done: &[String]) {
        let body = event_json(n).to_string();
        let todo = |c: &str| !done.iter().any(|d| d == c);
        if let (Some(url), Some(secret)) = (&self.settings.webhook_url, &self.webhook_secret)
            && todo("webhook")
        {
            let attempts = self.settings.webhook_attempts;
            for i in 1..=attempts {
                let (ok, detail) =
                    webhook::post_once(&self.http, url, secret, body.as_bytes()).await;
                record(
                    &self.store,
                    n,
                    "webhook",
                    ok,
                    &format!("attempt {i}/{attempts}: {detail}"),
                )
                .await;
                if ok {
                    break;
                }
                if i < attempts {
                    tokio::time::sleep(webhook::backoff(i)).await;
                }
            }
        }
        if self.settings.email_connection.is_some() && todo("email") {
            let (ok, detail) = self.email(n).await;
            record(&self.store, n, "email", ok, &detail).await;
        }
        if !self.settings.command.is_empty() && todo("command") {
            let (ok, detail) = self.command(&body).await;
            record(&self.store, n, "command", ok, &detail).await;
        }
    }

    /// A sample through every channel, once each, recorded nowhere.
    pub async fn send_sample(&self, n: &Notification) -> Vec<ChannelResult> {
        let body = event_json(n).to_string();
        let mut out = Vec::new();
        if let Some(url) = &self.settings.webhook_url {
            let result = match &self.webhook_secret {
                Some(secret) => webhook::post_once(&self.http, url, secret, body.as_bytes()).await,
                None => (false, "no shared secret".to_string()),
            };
            out.push(ChannelResult {
                channel: "webhook",
                ok: result.0,
                detail: result.1,
            });
        }
        if self.settings.email_connection.is_some() {
            let (ok, detail) = self.email(n).await;
            out.push(ChannelResult {
                channel: "email",
                ok,
                detail,
            });
        }
        if !self.settings.command.is_empty() {
            let (ok, detail) = self.command(&body).await;
            out.push(ChannelResult {
                channel: "command",
                ok,
                detail,
            });
        }
        out
    }

    async fn email(&self, n: &Notification) -> (bool, String) {
        let Some(name) = &self.settings.email_connection else {
            return (false, "no email_connection".into());
        };
        let conn = match self.store.connection(name).await {
            Ok(c) => c,
            Err(e) => return (false, e.to_string()),
        };
        let to: Vec<EmailAddress> = self
            .settings
            .email_to
            .iter()
            .filter_map(|a| EmailAddress::parse(a).ok())
            .collect();
        let about = n
            .connection
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let draft = Draft {
            from: conn.settings.user.clone(),
            from_name: Some("Postern".into()),
            to,
            cc: Vec::new(),
            bcc: Vec::new(),
            subject: format!("[Postern] {}{about}", n.event),
            text: Some(format!(
                "{}\n\nWhat happened: {}\n\nWhat to do: {}\n",
                n.event, n.reason, n.fix
            )),
            html: None,
            attachments: Vec::new(),
        };
        let composed = match draft.compose() {
            Ok(c) => c,
            Err(e) => return (false, e.to_string()),
        };
        match send_now(
            &self.store,
            &self.tokens,
            &self.delivery,
            &conn,
            Outgoing::from(composed),
        )
        .await
        {
            Ok(o) if o.all_sent() => (true, format!("sent as message {} through `{name}`", o.id)),
            Ok(o) => {
                let why = o
                    .failure
                    .map_or_else(|| "a recipient was refused".into(), |f| f.error);
                (false, format!("message {} through `{name}`: {why}", o.id))
            }
            Err(e) => (false, format!("through `{name}`: {e}")),
        }
    }

    async fn command(&self, body: &str) -> (bool, String) {
        let argv = &self.settings.command;
        let timeout = Duration::from_secs(self.settings.command_timeout_secs);
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A command that outlives its timeout is killed when the handle is dropped.
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return (false, format!("cannot run `{}`: {e}", argv[0])),
        };
        let run = async {
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its input is not an error.
                let _ = stdin.write_all(body.as_bytes()).await;
            }
            child.wait().await
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(s)) if s.success() => (true, "exit status 0".into()),
            Ok(Ok(s)) => (false, format!("`{}` {s}", argv[0])),
            Ok(Err(e)) => (false, format!("`{}`: {e}", argv[0])),
            Err(_) => (
                false,
                format!("`{}` killed after {}s", argv[0], timeout.as_secs()),
            ),
        }
    }
}

async fn record(store: &Store, n: &Notification, channel: &str, ok: bool, detail: &str) {
    if ok {
        tracing::info!(event = %n.event, id = n.id, channel, detail, "notification delivered");
    } else {
        tracing::warn!(event = %n.event, id = n.id, channel, detail, "notification not delivered");
    }
    if let Err(e) = store
        .record_notification_attempt(n.id, channel, ok, detail)
        .await
    {
        tracing::error!(error = %e, "cannot record a notification attempt");
    }
}
