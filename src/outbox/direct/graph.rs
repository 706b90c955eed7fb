//! Direct delivery through Microsoft Graph (`postern send`, `connection test` on a Graph
//! connection): the same log and outcome classes as SMTP, and for a test each step: DNS, TLS,
//! the token (its audience and permissions), sendMail and Graph's answer.

use std::time::Duration;

use super::{DirectError, Failure, Outgoing, SendOutcome, finish, record};
use crate::domain::Connection;
use crate::graph::{GraphClient, GraphOutcome};
use crate::oauth::{Claims, TokenManager, TokenSource};
use crate::outbox::deliver::AttemptResult;
use crate::smtp::client::Step;
use crate::store::Store;
use crate::store::messages::{Lease, RecipientOutcome};

/// Records `message`, sends it through Graph once, records the outcome.
pub(crate) async fn deliver<T: TokenSource>(
    store: &Store,
    client: &GraphClient<T>,
    conn: &Connection,
    message: &Outgoing,
    steps: Option<&mut Vec<Step>>,
) -> Result<SendOutcome, DirectError> {
    let (lease, recipients, _claim) = record(store, conn, message).await?;
    let outcome = client.send(&recipients, &message.bytes).await;
    conclude(store, lease, &recipients, client, outcome, steps).await
}

/// Records what Graph answered for the message (already recorded and claimed under `lease`), with a
/// sendMail step for a test.
pub(crate) async fn conclude<T: TokenSource>(
    store: &Store,
    lease: Lease,
    recipients: &[String],
    client: &GraphClient<T>,
    outcome: GraphOutcome,
    steps: Option<&mut Vec<Step>>,
) -> Result<SendOutcome, DirectError> {
    let failed = |reason: &str, transient: bool| Failure {
        stage: "sendMail".into(),
        error: reason.to_string(),
        likely_cause: None,
        transient,
    };
    let (result, failure) = match outcome {
        GraphOutcome::Sent(note) => (
            AttemptResult::Recipients(
                (0i64..)
                    .zip(recipients)
                    .map(|(p, _)| (p, RecipientOutcome::Sent(note.clone())))
                    .collect(),
            ),
            None,
        ),
        GraphOutcome::Defer { reason, .. } => {
            let f = failed(&reason, true);
            (AttemptResult::Defer(reason), Some(f))
        }
        GraphOutcome::Hold(reason) => {
            let f = failed(&reason, false);
            (AttemptResult::Hold(reason), Some(f))
        }
        GraphOutcome::Fail(reason) => {
            let f = failed(&reason, false);
            (AttemptResult::Fail(reason), Some(f))
        }
    };
    if let Some(steps) = steps {
        steps.push(Step {
            name: "sendMail",
            ok: failure.is_none(),
            detail: match &failure {
                None => format!("POST {} answered 202 Accepted", client.url()),
                Some(f) => format!("POST {}: {}", client.url(), f.error),
            },
        });
    }
    finish(
        store,
        lease,
        result,
        failure,
        crate::domain::Transport::Graph,
    )
    .await
}

/// The steps before sendMail: DNS, TCP and TLS to the Graph host, the token and what it allows.
/// Returns the failure (step, error, likely cause) that stops the test, if any.
pub(crate) async fn preflight(
    tokens: &TokenManager,
    conn: &Connection,
    insecure_skip_tls_verify: bool,
    steps: &mut Vec<Step>,
) -> Option<Failure> {
    let base = conn.settings.graph_base();
    let host = base.host_str().unwrap_or_default().to_string();
    let port = base.port_or_known_default().unwrap_or(443);
    let stop = |steps: &mut Vec<Step>, name: &'static str, error: String, cause: Option<String>| {
        steps.push(Step {
            name,
            ok: false,
            detail: error.clone(),
        });
        Some(Failure {
            stage: name.into(),
            error,
            likely_cause: cause,
            transient: false,
        })
    };
    // DNS.
    let lookup = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::lookup_host((host.trim_matches(['[', ']']), port)),
    )
    .await;
    let addrs: Vec<std::net::SocketAddr> = match lookup {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => {
            return stop(
                steps,
                "dns",
                format!("{host}: {e}"),
                Some(
                    "the Graph host name does not resolve: check --graph-url and the server's DNS"
                        .into(),
                ),
            );
        }
        Err(_) => return stop(steps, "dns", format!("{host}: no answer in 10 s"), None),
    };
    let Some(addr) = addrs.first().copied() else {
        return stop(steps, "dns", format!("{host}: no address"), None);
    };
    steps.push(Step {
        name: "dns",
        ok: true,
        detail: format!(
            "{host} is {}",
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    // TCP and TLS, with the trust Postern's sendMail uses.
    let tls = match crate::smtp::client::tls_client_config(
        conn.settings.ca_file.as_deref(),
        insecure_skip_tls_verify,
    ) {
        Ok(t) => t,
        Err(e) => return stop(steps, "tls", e.to_string(), None),
    };
    let tcp = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return stop(
                steps,
                "tcp",
                format!("{addr}: {e}"),
                Some(
                    "a firewall or proxy blocks outgoing HTTPS (port 443) to Microsoft Graph"
                        .into(),
                ),
            );
        }
        Err(_) => return stop(steps, "tcp", format!("{addr}: no answer in 10 s"), None),
    };
    let name =
        match rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string()) {
            Ok(n) => n,
            Err(e) => return stop(steps, "tls", format!("{host}: {e}"), None),
        };
    let connector = tokio_rustls::TlsConnector::from(tls);
    match tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await {
        Ok(Ok(s)) => {
            let version = s
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            steps.push(Step {
                name: "tls",
                ok: true,
                detail: format!("{version} with {host}, certificate verified"),
            });
        }
        Ok(Err(e)) => {
            return stop(steps, "tls", format!("{host}: {e}"), Some(
                "the certificate is not trusted: a TLS-inspecting proxy needs its CA in --ca-file".into(),
            ));
        }
        Err(_) => return stop(steps, "tls", format!("{host}: handshake timed out"), None),
    }
    // The token, and what it allows.
    let token = match tokens.access_token(conn).await {
        Ok(t) => t,
        Err(e) => {
            let cause = e
                .needs_reauthorization()
                .then(|| crate::explain::reauthorization_fix(conn.name().as_str(), &e.to_string()));
            return stop(steps, "token", e.to_string(), cause);
        }
    };
    let claims = Claims::decode(&token.value);
    let detail = match &claims {
        Some(c) => format!(
            "audience {}; {}; valid until {}",
            c.audience.join(", "),
            match (&c.scp, c.roles.is_empty()) {
                (Some(scp), _) => format!("delegated scp: {scp}"),
                (None, false) => format!("app-only roles: {}", c.roles.join(" ")),
                (None, true) => "no scp or roles".to_string(),
            },
            token.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "an opaque token (not a JWT): its audience cannot be shown".into(),
    };
    if let Some(c) = &claims {
        if !c.is_graph() {
            return stop(
                steps,
                "token",
                detail,
                Some(format!(
                    "the token is not for Microsoft Graph: set the Graph scope (`postern connection edit {} --scope \
                 \"https://graph.microsoft.com/Mail.Send offline_access\"`) and authorize again",
                    conn.name()
                )),
            );
        }
        let allows = c
            .scp
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .chain(c.roles.iter().map(String::as_str))
            .any(|p| p.starts_with("Mail.Send"));
        if !allows {
            return stop(steps, "token", detail, Some(
                "the token carries no Mail.Send permission: in Entra add Microsoft Graph > Mail.Send \
                 (delegated, or application for app-only) and grant admin consent, then authorize again".into(),
            ));
        }
    }
    steps.push(Step {
        name: "token",
        ok: true,
        detail,
    });
    None
}
