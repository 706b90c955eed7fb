//! Checks of one connection: status, token, scopes, AUTH at the provider, secret expiry,
//! refresh token age, held or failing mail.

use std::collections::HashMap;

use super::Check;
use crate::domain::{Connection, ConnectionStatus, EmailAddress, OAuthFlow};
use crate::explain::reauthorization_fix;
use crate::oauth::TokenManager;
use crate::outbox::{TokenFactory, client_config};
use crate::settings::Settings;
use crate::smtp::client::SmtpClient;
use crate::store::messages::Source;
use crate::store::{Store, StoreError};

/// Microsoft ends a refresh token unused for 90 days; warn well before.
const REFRESH_AGE_WARN_DAYS: i64 = 60;
const SECRET_WARN_DAYS: i64 = 30;

pub async fn checks(
    settings: &Settings,
    store: &Store,
    tokens: &TokenManager,
    c: &Connection,
    send_to: Option<&EmailAddress>,
    mail_counts: &MailCounts,
) -> Vec<Check> {
    let name = c.name().as_str();
    let label = |what: &str| format!("connection {name}: {what}");
    let mut out = Vec::new();
    match c.effective_status() {
        ConnectionStatus::Disabled => {
            out.push(Check::warn(
                label("status"),
                "disabled",
                format!("`postern connection enable {name}` when it should send"),
            ));
            return out;
        }
        ConnectionStatus::NeedsReauthorization { reason } => {
            out.push(Check::fail(
                label("status"),
                format!("needs re-authorization: {reason}"),
                reauthorization_fix(name, &reason),
            ));
        }
        ConnectionStatus::New
            if !c.refresh_token_set && c.settings.flow == OAuthFlow::AuthorizationCode =>
        {
            out.push(Check::fail(
                label("status"),
                "never authorized",
                format!("Run `postern connection authorize {name}`."),
            ));
        }
        s => out.push(Check::ok(label("status"), s.as_str())),
    }
    out.push(
        match c
            .settings
            .scopes
            .clone()
            .check(c.settings.provider, c.settings.flow)
        {
            Err(e) => Check::fail(
                label("scopes"),
                e.to_string(),
                format!("`postern connection edit {name} --scope ...`"),
            ),
            Ok((_, notices)) if !notices.is_empty() => Check::warn(
                label("scopes"),
                notices
                    .into_iter()
                    .map(|n| n.0)
                    .collect::<Vec<_>>()
                    .join("; "),
                format!("`postern connection edit {name} --scope ...`"),
            ),
            Ok(_) => Check::ok(label("scopes"), c.settings.scopes.to_string()),
        },
    );
    if out.iter().all(|x| x.level == super::Level::Ok) {
        out.extend(provider(settings, store, tokens, c, send_to).await);
    }
    out.extend(expiry(c));
    out.push(mail(c, mail_counts));
    out
}

/// Token, then AUTH at the provider (or a test message with `--send-to`).
async fn provider(
    settings: &Settings,
    store: &Store,
    tokens: &TokenManager,
    c: &Connection,
    send_to: Option<&EmailAddress>,
) -> Vec<Check> {
    let name = c.name().as_str();
    let label = |what: &str| format!("connection {name}: {what}");
    if let Err(e) = tokens.access_token(c).await {
        let fix = match &e {
            crate::oauth::TokenError::NeedsReauthorization { reason } => reauthorization_fix(name, reason),
            _ => "Check the token endpoint is reachable; `postern connection token NAME -v` shows the exchange.".into(),
        };
        return vec![Check::fail(label("token"), e.to_string(), fix)];
    }
    let mut out = vec![Check::ok(label("token"), "obtained")];
    if let Some(to) = send_to {
        let report = crate::outbox::direct::test_connection(
            store,
            tokens,
            &settings.delivery,
            c,
            to,
            Source::Cli,
        )
        .await;
        out.push(match report {
            Ok(r) if r.passed() => {
                Check::ok(label("send"), format!("test message accepted for {to}"))
            }
            Ok(r) => {
                let f = r.failure.unwrap_or_else(refused_recipient);
                Check::fail(
                    label("send"),
                    format!("{}: {}", f.stage, f.error),
                    f.likely_cause.unwrap_or_else(|| {
                        format!("Run `postern connection test {name} --to {to}`.")
                    }),
                )
            }
            Err(e) => Check::fail(label("send"), e.to_string(), "Check the store."),
        });
        return out;
    }
    let client = match SmtpClient::new(client_config(c, &settings.delivery), tokens.token_source(c))
    {
        Ok(cl) => cl,
        Err(e) => {
            out.push(Check::fail(
                label("AUTH"),
                e.to_string(),
                format!("`postern connection edit {name}`"),
            ));
            return out;
        }
    };
    out.push(match client.connect().await {
        Ok(session) => {
            let _ = session.quit().await;
            Check::ok(
                label("AUTH"),
                format!(
                    "{}:{} accepted the token (no mail sent)",
                    c.settings.host, c.settings.port
                ),
            )
        }
        Err(e) => {
            let fix = crate::outbox::direct::likely_cause(&e, c)
                .unwrap_or_else(|| format!("Run `postern connection test {name} --to EMAIL`."));
            Check::fail(label("AUTH"), e.to_string(), fix)
        }
    });
    out
}

/// A test that did not pass without a failure of the whole session: a recipient was refused.
fn refused_recipient() -> crate::outbox::direct::Failure {
    crate::outbox::direct::Failure {
        stage: "send".into(),
        error: "a recipient was refused".into(),
        likely_cause: None,
        transient: false,
    }
}

fn expiry(c: &Connection) -> Vec<Check> {
    let name = c.name().as_str();
    let label = |what: &str| format!("connection {name}: {what}");
    let today = chrono::Utc::now().date_naive();
    let mut out = Vec::new();
    let renew = format!(
        "Create a new secret under App registrations > Certificates & secrets, then \
         `postern connection edit {name} --client-secret-file FILE --secret-expires YYYY-MM-DD`."
    );
    if let Some(date) = c.expiry.secret_expires {
        let left = (date - today).num_days();
        out.push(if left < 0 {
            Check::fail(label("client secret"), format!("expired on {date}"), renew)
        } else if left <= SECRET_WARN_DAYS {
            Check::warn(
                label("client secret"),
                format!("expires on {date}, in {left} day(s)"),
                renew,
            )
        } else {
            Check::ok(label("client secret"), format!("expires on {date}"))
        });
    } else if c.client_secret_set {
        out.push(Check::ok(
            label("client secret"),
            format!("expiry not recorded (`postern connection edit {name} --secret-expires YYYY-MM-DD` to be warned)"),
        ));
    }
    if c.settings.flow == OAuthFlow::AuthorizationCode
        && let Some(t) = c.expiry.refresh_obtained_at
    {
        let age = (chrono::Utc::now() - t).num_days();
        out.push(if age > REFRESH_AGE_WARN_DAYS {
            Check::warn(
                label("refresh token"),
                format!("obtained {age} days ago: Microsoft ends refresh tokens unused for 90 days"),
                format!("Check serve runs (its keep-alive refreshes idle connections), or `postern connection token {name}`."),
            )
        } else {
            Check::ok(label("refresh token"), format!("obtained {age} day(s) ago"))
        });
    }
    out
}

/// Per connection id: held messages, and those failed in the last 24 hours (read once for all
/// connections, see [`Store::held_and_failed`]).
pub type MailCounts = Result<HashMap<i64, (i64, i64)>, StoreError>;

fn mail(c: &Connection, counts: &MailCounts) -> Check {
    let name = c.name().as_str();
    let label = format!("connection {name}: mail");
    match counts.as_ref().map(|m| m.get(&c.id)) {
        Ok(None) => Check::ok(label, "nothing held or failed in the last 24 h"),
        Ok(Some((held, failed))) => Check::warn(
            label,
            format!("{held} held, {failed} failed in the last 24 h"),
            format!(
                "See `postern queue list` and `postern messages list --connection {name} --status failed`."
            ),
        ),
        Err(e) => Check::fail(label, e.to_string(), "Check the store."),
    }
}
