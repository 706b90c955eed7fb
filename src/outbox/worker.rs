//! Delivery workers: per connection with due mail, up to `max_concurrent` senders, each keeping
//! one authenticated upstream session open between messages.
//!
//! A sender's step is [`Delivery::try_deliver_next`] (tests drive it directly); [`Delivery::run`]
//! ([`dispatch`]) starts senders as the scheduler says and ends them when idle. A sender takes new relay mail from its
//! connection's lane (handed over in memory, already claimed) and everything else from the store,
//! leased; either way a crashed worker's claims return to the queue at the next start
//! (at-least-once, never lost). Attempts are recorded through the outbox writer, in the same
//! transactions as the mail coming in.
//!
//! Memory: a batch holds at most `BATCH` messages and [`CLAIM_BYTES`] of bodies, or one bigger
//! message alone, and each body is freed once sent, before the batch is recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::deliver::{AttemptResult, TokenFactory, client_config};
use super::fallback::{GraphFallback, SmtpAuthOff};
use super::owners::Owners;
use super::pacing::{Pacing, Slot};
use super::queue::Outbox;
use super::retry::RetryPolicy;
use super::schedule::Schedule;
use super::transport::{MailTransport, NextMessage, TransportError};
use super::usage::Window;
use crate::domain::Transport as TransportKind;
use crate::domain::{Connection, ConnectionStatus, Fallback, OAuthFlow};
use crate::metrics::Metrics;
use crate::settings::DeliverySettings;
use crate::smtp::client::SmtpClient;
use crate::store::attempts::{Attempt, AttemptRecord};
use crate::store::messages::{
    CLAIM_BYTES, ClaimLimit, ClaimedMessage, Lease, MessageStatus, RecipientOutcome, now_ms,
};
use crate::store::{Store, StoreError};

/// Messages one sender takes at a time (and records in one go); their bodies stay within
/// [`CLAIM_BYTES`]. 32, not 16: with a backlog every batch costs a claim and a record (a
/// transaction each, and the index pages they touch); the relay benchmark's backlog path
/// measured 16 → 32 → 64 at about 0.29 → 0.26 → 0.26 ms of CPU per message, and the fairness
/// benchmark's 50,000-message backlog drained 5,400 → 8,400 msg/s with the others' p99 unchanged
/// (730 → 695 ms). Not more: a batch is what a crash may send twice, what waits `sending` until
/// it is recorded, and what a busy connection sends before giving up a scarce session.
const BATCH: usize = 32;

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    Empty,
    /// The connection cannot send now; its waiting mail is held.
    Held(String),
    /// Messages were attempted, with their new statuses.
    Attempted(Vec<(String, MessageStatus)>),
}

/// What one step did, and whether it found the store empty of due mail.
struct Step {
    outcome: Outcome,
    store_drained: bool,
    /// The connection's next due time in the store, as the step's claim left it.
    next_due: Option<i64>,
}

impl Step {
    fn done(outcome: Outcome) -> Self {
        Self {
            outcome,
            store_drained: false,
            next_due: None,
        }
    }
}

/// One message sent (or not): what to record, and how long the provider took.
struct Sent {
    attempt: Attempt,
    /// The connection needs an admin: hold its mail, for this reason.
    hold: Option<String>,
    /// A provider limit is reached: the connection's mail waits until then (ms), for this reason.
    pause: Option<(i64, String)>,
    upstream: Duration,
}

impl Sent {
    /// `msg` waits for a provider limit until `until`, with the connection's other mail:
    /// deferred, never failed.
    fn paused(
        msg: &ClaimedMessage,
        until: i64,
        reason: String,
        upstream: Duration,
        transport: Option<&'static str>,
    ) -> Self {
        Sent {
            attempt: Attempt {
                id: msg.id.clone(),
                lease_id: msg.lease_id,
                record: AttemptRecord::Whole(reason.clone()),
                retry_at_ms: until,
                give_up: false,
                transport,
            },
            hold: None,
            pause: Some((until, reason)),
            upstream,
        }
    }
}

/// How long Exchange Online blocks a mailbox that passed its daily recipient limit.
const QUOTA_BLOCK_MS: i64 = 24 * 3_600_000;

struct Inner<F> {
    store: Store,
    settings: DeliverySettings,
    policy: RetryPolicy,
    tokens: F,
    outbox: Outbox,
    metrics: Metrics,
    /// Per connection with a per-minute limit, when its next message may go.
    pacing: Pacing,
    /// Per connection that sent in the last day, its sending in that day (daily limits).
    usage: std::sync::Mutex<HashMap<i64, Window>>,
    /// Which connections may send now (see [`super::schedule`]).
    schedule: std::sync::Mutex<Schedule>,
    /// Tells the dispatcher to plan again (a sender ended or asked for company).
    kick: tokio::sync::Notify,
    /// Connections wait for a session: idle senders end now instead of lingering.
    pressure: tokio::sync::Notify,
    /// SMTP connections with a Graph fallback whose SMTP AUTH answered 5.7.139 lately.
    smtp_auth_off: SmtpAuthOff,
    /// The connections this instance may run senders for (all of them on SQLite).
    owners: Owners,
}

/// The delivery side of the outbox.
pub struct Delivery<F> {
    inner: Arc<Inner<F>>,
}

impl<F> Clone for Delivery<F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<F> std::fmt::Debug for Delivery<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").finish_non_exhaustive()
    }
}

/// Why a connection cannot send now, if it cannot.
pub fn hold_reason(conn: &Connection) -> Option<String> {
    let name = conn.name();
    match conn.effective_status() {
        ConnectionStatus::Disabled => Some(format!(
            "connection `{name}` is disabled (postern connection enable {name})"
        )),
        ConnectionStatus::NeedsReauthorization { reason } => Some(format!(
            "connection `{name}` needs re-authorization: {reason} (postern connection authorize {name})"
        )),
        ConnectionStatus::New
            if conn.settings.flow == OAuthFlow::AuthorizationCode && !conn.refresh_token_set =>
        {
            Some(format!(
                "connection `{name}` has never been authorized (postern connection authorize {name})"
            ))
        }
        _ => None,
    }
}

impl<F: TokenFactory> Delivery<F> {
    pub fn new(
        store: Store,
        settings: DeliverySettings,
        tokens: F,
        outbox: Outbox,
        metrics: Metrics,
    ) -> Self {
        let policy = RetryPolicy::from_settings(&settings);
        let owners = Owners::new(&store);
        Self {
            inner: Arc::new(Inner {
                store,
                policy,
                tokens,
                outbox,
                metrics,
                pacing: Default::default(),
                usage: Default::default(),
                schedule: std::sync::Mutex::new(Schedule::new(settings.max_sessions)),
                kick: tokio::sync::Notify::new(),
                pressure: tokio::sync::Notify::new(),
                smtp_auth_off: SmtpAuthOff::default(),
                owners,
                settings,
            }),
        }
    }

    /// A transport for `conn`: one reused upstream SMTP session, or a Graph client.
    pub fn transport(&self, conn: &Connection) -> Result<MailTransport<F::Source>, TransportError> {
        let tokens = self.inner.tokens.token_source(conn);
        Ok(match conn.settings.transport {
            TransportKind::Smtp => {
                let config = client_config(conn, &self.inner.settings);
                let smtp = SmtpClient::new(config, tokens)?.transport();
                match conn.settings.fallback {
                    None => MailTransport::Smtp(smtp),
                    Some(Fallback::Graph) => {
                        let graph = crate::graph::GraphClient::new(
                            conn,
                            self.inner.settings.insecure_skip_tls_verify,
                            self.inner.tokens.graph_token_source(conn),
                        )?;
                        MailTransport::SmtpOrGraph(Box::new(GraphFallback::new(
                            smtp,
                            graph,
                            conn.id,
                            self.inner.smtp_auth_off.clone(),
                        )))
                    }
                }
            }
            TransportKind::Graph => MailTransport::Graph(crate::graph::GraphClient::new(
                conn,
                self.inner.settings.insecure_skip_tls_verify,
                tokens,
            )?),
        })
    }

    /// Takes up to a batch of `conn`'s mail (from its lane, then the store) and delivers it over
    /// `transport`. `stop` is checked between messages: what was taken and not attempted goes back.
    pub async fn try_deliver_next(
        &self,
        conn: &Connection,
        transport: &mut MailTransport<F::Source>,
        stop: &CancellationToken,
    ) -> Result<Outcome, StoreError> {
        // Several instances: only the connection's owner sends for it.
        let owned = self
            .inner
            .owners
            .acquire(&self.inner.store, conn.id)
            .await?;
        if !matches!(owned, super::owners::Acquired::Owned { .. }) {
            return Ok(Outcome::Empty);
        }
        Ok(self.step(conn, transport, stop, true).await?.outcome)
    }

    /// One batch. The store is asked only when `check_store` (the lane carries new relay mail).
    async fn step(
        &self,
        conn: &Connection,
        transport: &mut MailTransport<F::Source>,
        stop: &CancellationToken,
        check_store: bool,
    ) -> Result<Step, StoreError> {
        let store = &self.inner.store;
        let lane = self.inner.outbox.wakers().lane(conn.id);
        if let Some(reason) = hold_reason(conn) {
            lane.close();
            let handed: Vec<Lease> = lane
                .take(usize::MAX)
                .iter()
                .map(ClaimedMessage::lease)
                .collect();
            store.unclaim(&handed).await?;
            store.hold_connection_mail(conn.id, &reason).await?;
            return Ok(Step::done(Outcome::Held(reason)));
        }
        let mut batch = lane.take(BATCH);
        let mut store_drained = false;
        let mut next_due = None;
        if check_store && batch.len() < BATCH {
            // The batch's bodies stay within `CLAIM_BYTES` (or one bigger message alone).
            let handed: u64 = batch.iter().map(|m| m.body.len() as u64).sum();
            let limit = ClaimLimit {
                messages: (BATCH - batch.len()) as u32,
                bytes: CLAIM_BYTES.saturating_sub(handed),
                oversized_first: batch.is_empty(),
            };
            let claim = self
                .inner
                .outbox
                .claim(conn.id, limit, store.lease_ms())
                .await?;
            next_due = claim.next_due;
            if claim.drained {
                // Nothing more is due in the store: new mail may come straight to us.
                store_drained = true;
                lane.open();
            } else if claim.messages.is_empty() {
                // Due mail too big to join the lane's: new mail waits in the store behind it,
                // so the lane empties and the next claim takes it.
                lane.close();
            }
            batch.extend(claim.messages);
        }
        if batch.is_empty() {
            return Ok(Step {
                outcome: Outcome::Empty,
                store_drained,
                next_due,
            });
        }
        // Send the batch, then record it in one go (one transaction for the batch). The claims
        // are renewed meanwhile, so no other instance takes over a long send.
        let _claims = store.keep_claims(batch.iter().map(ClaimedMessage::lease).collect());
        let mut tried = Vec::with_capacity(batch.len());
        let mut hold = None;
        let mut pause = None;
        let mut rest = batch.into_iter().peekable();
        let mut rest_first = None;
        while let Some(mut msg) = rest.next() {
            if !self.inner.owners.owns(conn.id) {
                // The ownership ran out (its renewal failed): another instance may own the
                // connection now; what is left goes back to the queue.
                rest_first = Some(msg);
                break;
            }
            let sent = match self.daily_room(conn, &msg).await {
                Some(until) => self.over_limit(conn, &msg, until),
                None => {
                    // Held until the attempt ends: its end is part of the pacing.
                    let _slot = self.pace(conn).await;
                    let next = rest
                        .peek()
                        .filter(|next| self.may_go_after(conn, &msg, next));
                    self.attempt(conn, transport, &msg, next).await
                }
            };
            if let Some(reason) = &sent.hold {
                hold = Some(reason.clone());
            }
            if sent.pause.is_some() {
                pause.clone_from(&sent.pause);
            }
            // Sent or not, the body is not needed again (a retry reads it from the store): free
            // it now rather than when the whole batch is recorded.
            msg.body = Vec::new();
            tried.push((msg, sent));
            if hold.is_some() || pause.is_some() || stop.is_cancelled() {
                break;
            }
        }
        let left: Vec<Lease> = rest_first
            .into_iter()
            .chain(rest)
            .map(|m| m.lease())
            .collect();
        let attempts: Vec<Attempt> = tried.iter().map(|(_, s)| s.attempt.clone()).collect();
        let statuses = self.inner.outbox.record(attempts).await?;
        if let Some(reason) = &hold {
            // The token manager has marked the connection; hold its mail until an admin acts.
            store.hold_connection_mail(conn.id, reason).await?;
        }
        store.unclaim(&left).await?;
        if let Some((until, reason)) = &pause {
            let n = store.defer_connection_mail(conn.id, *until, reason).await?;
            tracing::warn!(connection = %conn.name(), waiting = n, until = %crate::store::messages::rfc3339_ms(*until), "{reason}");
        }
        let mut done = Vec::with_capacity(tried.len());
        for ((msg, sent), status) in tried.into_iter().zip(statuses) {
            let status = if sent.hold.is_some() {
                MessageStatus::Held
            } else {
                status
            };
            if status == MessageStatus::Sending {
                // Our claim ran out and another worker took the message over: this attempt was
                // not recorded, the newer claim's outcome stands (a record never leaves a
                // message `sending` otherwise).
                tracing::warn!(message = %msg.id, connection = %conn.name(), "claim taken over while sending: this attempt was not recorded");
                done.push((msg.id, status));
                continue;
            }
            self.inner.metrics.delivery(status.as_str(), sent.upstream);
            // Why it did not go, in the log too (the store has it per message).
            let reason = match &sent.attempt.record {
                AttemptRecord::Whole(r) => Some(r.as_str()),
                AttemptRecord::Recipients(_) => None,
            };
            tracing::info!(
                message = %msg.id,
                connection = %conn.name(),
                status = %status,
                attempt = msg.attempts,
                upstream_ms = sent.upstream.as_millis() as u64,
                reason,
                "delivery attempt"
            );
            done.push((msg.id, status));
        }
        Ok(Step {
            outcome: Outcome::Attempted(done),
            store_drained,
            next_due,
        })
    }

    /// Waits for the connection's next sending slot when a per-minute cap is set; the slots are
    /// shared by all senders of the connection and held until the returned guard is dropped.
    async fn pace(&self, conn: &Connection) -> Option<Slot<'_>> {
        match self.per_minute(conn) {
            0 => None,
            limit => Some(self.inner.pacing.slot(conn.id, limit).await),
        }
    }

    /// Sends one message and says what to record (nothing is recorded yet). A message with
    /// more recipients than the provider takes at once goes in parts: this attempt takes the
    /// first part, the rest is due again at once.
    ///
    /// `next`: the message sent right after this one, when nothing can come between (see
    /// [`Self::may_go_after`]); its envelope goes with this one's data.
    async fn attempt(
        &self,
        conn: &Connection,
        transport: &mut MailTransport<F::Source>,
        msg: &ClaimedMessage,
        next: Option<&ClaimedMessage>,
    ) -> Sent {
        let (part, later) = parts(conn, msg);
        let next = next.map(|n| NextMessage {
            mail_from: &n.mail_from,
            part: parts(conn, n).0,
            body: &n.body,
        });
        let started = std::time::Instant::now();
        let delivered = transport.send(&msg.mail_from, part, &msg.body, next).await;
        let upstream = started.elapsed();
        let transport = Some(delivered.transport.as_str());
        let now = now_ms();
        let (retry_at_ms, give_up) =
            self.inner
                .policy
                .next(msg.attempts.max(1) as u32, msg.queued_at, now);
        if let Some(e) = delivered.quota_blocked {
            // Exchange Online blocks the mailbox for a day: everything waits, nothing fails.
            let until = now + QUOTA_BLOCK_MS;
            let reason = format!(
                "{e} — the mailbox passed Microsoft 365's daily recipient limit and is blocked \
                 for 24 hours; its mail waits and goes after that (lower the connection's \
                 recipients-per-day limit if this recurs)"
            );
            return Sent::paused(msg, until, reason, upstream, transport);
        }
        if let (Some(wait), AttemptResult::Defer(reason)) = (delivered.wait, &delivered.result) {
            // The provider named the wait (Graph's Retry-After): the connection's mail waits
            // that long, then goes; it counts as deferred, never failed.
            let until = now + wait.as_millis() as i64;
            let reason = format!(
                "{reason} (waiting {} s as Retry-After asks)",
                wait.as_secs()
            );
            return Sent::paused(msg, until, reason, upstream, transport);
        }
        let (record, retry_at_ms, give_up, hold) = match delivered.result {
            AttemptResult::Recipients(mut outcomes) => {
                let sent = outcomes
                    .iter()
                    .filter(|(_, o)| matches!(o, RecipientOutcome::Sent(_)))
                    .count();
                if sent > 0 {
                    self.count_sent(conn.id, now, sent as u64);
                }
                if later.is_empty() {
                    (
                        AttemptRecord::Recipients(outcomes),
                        retry_at_ms,
                        give_up,
                        None,
                    )
                } else {
                    let why = format!(
                        "not yet sent: the provider takes {} recipients per message, \
                         so this message goes in parts",
                        conn.limits().recipients_per_message
                    );
                    outcomes.extend(
                        later
                            .iter()
                            .map(|(p, _)| (*p, RecipientOutcome::Deferred(why.clone()))),
                    );
                    (AttemptRecord::Recipients(outcomes), now, false, None)
                }
            }
            AttemptResult::Defer(reason) => {
                (AttemptRecord::Whole(reason), retry_at_ms, give_up, None)
            }
            AttemptResult::Fail(reason) => (AttemptRecord::Whole(reason), retry_at_ms, true, None),
            // Due again at once: it is held with the rest until the connection is fixed.
            AttemptResult::Hold(reason) => (
                AttemptRecord::Whole(reason.clone()),
                now,
                false,
                Some(reason),
            ),
        };
        Sent {
            attempt: Attempt {
                id: msg.id.clone(),
                lease_id: msg.lease_id,
                record,
                retry_at_ms,
                give_up,
                transport,
            },
            hold,
            pause: None,
            upstream,
        }
    }

    /// The connection's own per-minute limit, and the instance-wide one, whichever is lower
    /// (0: none).
    fn per_minute(&self, conn: &Connection) -> u32 {
        [
            conn.limits().messages_per_minute,
            self.inner.settings.messages_per_minute,
        ]
        .into_iter()
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0)
    }

    /// Whether `next` is sure to be sent right after `msg` (so its envelope may go out with
    /// `msg`'s data): no per-minute pacing to wait for, and room in the daily limits for both.
    fn may_go_after(&self, conn: &Connection, msg: &ClaimedMessage, next: &ClaimedMessage) -> bool {
        if self.per_minute(conn) > 0 {
            return false;
        }
        let limits = conn.limits();
        if limits.messages_per_day == 0 && limits.recipients_per_day == 0 {
            return true;
        }
        let recipients = (parts(conn, msg).0.len() + parts(conn, next).0.len()) as u64;
        let mut usage = self.inner.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage
            .entry(conn.id)
            .or_default()
            .has_room(now_ms(), &limits, 2, recipients)
    }

    /// When `msg` would pass the connection's daily limits: the time there is room again.
    async fn daily_room(&self, conn: &Connection, msg: &ClaimedMessage) -> Option<i64> {
        let limits = conn.limits();
        if limits.messages_per_day == 0 && limits.recipients_per_day == 0 {
            return None;
        }
        self.seed_usage(conn.id).await;
        let per_message = limits.recipients_per_message as usize;
        let recipients = match per_message {
            0 => msg.recipients.len(),
            n => msg.recipients.len().min(n),
        };
        let mut usage = self.inner.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage
            .entry(conn.id)
            .or_default()
            .room_at(now_ms(), &limits, recipients as u64)
    }

    /// The first time a connection's daily limits matter in this process, its last day of
    /// sending is read from the store, so a restart does not reset the count.
    async fn seed_usage(&self, connection_id: i64) {
        let known = self
            .inner
            .usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&connection_id);
        if known {
            return;
        }
        let mut w = Window::default();
        match self
            .inner
            .store
            .sent_since(connection_id, now_ms() - QUOTA_BLOCK_MS)
            .await
        {
            Ok(rows) => {
                for (at, n) in rows {
                    w.add(at, 1, n as u64);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last day's sending; counting from now")
            }
        }
        self.inner
            .usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(connection_id)
            .or_insert(w);
    }

    /// A connection just taken over from another instance: its last day of sending is read
    /// again from the shared log, so the new owner starts with the old owner's count.
    fn forget_usage(&self, connection_id: i64) {
        self.inner
            .usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&connection_id);
    }

    fn count_sent(&self, connection_id: i64, at: i64, recipients: u64) {
        let mut usage = self.inner.usage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = usage.get_mut(&connection_id) {
            w.add(at, 1, recipients);
        }
    }

    /// `msg` must wait for the connection's daily limits: deferred (never failed) until `until`.
    fn over_limit(&self, conn: &Connection, msg: &ClaimedMessage, until: i64) -> Sent {
        let reason = format!(
            "connection `{}` reached its daily sending limit ({}); its mail waits until {} \
             and goes then",
            conn.name(),
            conn.limits(),
            crate::store::messages::rfc3339_ms(until)
        );
        Sent::paused(msg, until, reason, Duration::ZERO, None)
    }
}

/// Recipients (positions and addresses) of a message, or of the part an attempt takes.
type Part<'m> = &'m [(i64, String)];

/// The recipients an attempt takes (at most the provider's per-message number), and the rest.
fn parts<'m>(conn: &Connection, msg: &'m ClaimedMessage) -> (Part<'m>, Part<'m>) {
    let per_message = conn.limits().recipients_per_message as usize;
    if per_message > 0 && msg.recipients.len() > per_message {
        msg.recipients.split_at(per_message)
    } else {
        (&msg.recipients[..], &[][..])
    }
}

#[path = "dispatch.rs"]
mod dispatch;

#[cfg(test)]
#[path = "worker_tests.rs"]
mod claim_tests;
