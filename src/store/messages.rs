//! Messages: the durable outbox and the sent-mail log (one row per message, one per recipient,
//! one per delivery attempt). Times are unix milliseconds.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{On, Store, StoreError};

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Queued,
    Sending,
    Sent,
    Deferred,
    Failed,
    Held,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Deferred => "deferred",
            MessageStatus::Failed => "failed",
            MessageStatus::Held => "held",
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status `{0}` is not known: use queued, sending, sent, deferred, failed or held")]
pub struct StatusError(String);

impl FromStr for MessageStatus {
    type Err = StatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "queued" => MessageStatus::Queued,
            "sending" => MessageStatus::Sending,
            "sent" => MessageStatus::Sent,
            "deferred" => MessageStatus::Deferred,
            "failed" => MessageStatus::Failed,
            "held" => MessageStatus::Held,
            _ => return Err(StatusError(s.to_string())),
        })
    }
}

/// Where a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Relay,
    Api,
    Cli,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Relay => "relay",
            Source::Api => "api",
            Source::Cli => "cli",
        }
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub connection_id: i64,
    pub connection_name: String,
    pub source: Source,
    /// The relay user or API key that submitted it.
    pub submitter: Option<String>,
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub body: Vec<u8>,
    pub idempotency_key: Option<String>,
}

/// A small relay message for tests.
#[cfg(test)]
pub(crate) fn test_message(to: &[&str]) -> NewMessage {
    NewMessage {
        connection_id: 1,
        connection_name: "fake".into(),
        source: Source::Relay,
        submitter: Some("app".into()),
        mail_from: "a@example.org".into(),
        recipients: to.iter().map(|s| s.to_string()).collect(),
        body: b"Subject: hi\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n".to_vec(),
        idempotency_key: None,
    }
}

/// The result of queuing one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: String,
    /// The idempotency key matched an earlier message: nothing new was queued.
    pub duplicate: bool,
}

/// A new claim's fence (see [`Lease`]): random, so instances need not agree on a counter.
pub(crate) fn new_lease_id() -> i64 {
    rand::random::<i64>() & i64::MAX
}

/// A claim on a message: its id and the claim's lease id, a new one per claim. Whatever a
/// claimer writes to the message (its attempt, a renewal, a release) changes it only while the
/// lease id is still this one: a worker whose lease ran out and was taken over by another
/// claim cannot overwrite that claim's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub lease_id: i64,
}

/// A message a worker has leased for delivery.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: String,
    /// This claim's fence (see [`Lease`]).
    pub lease_id: i64,
    pub connection_id: i64,
    pub mail_from: String,
    /// Recipients still to deliver, with their positions.
    pub recipients: Vec<(i64, String)>,
    pub body: Vec<u8>,
    pub attempts: i64,
    pub queued_at: i64,
}

impl ClaimedMessage {
    /// This message's claim, to record, renew or return it.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id.clone(),
            lease_id: self.lease_id,
        }
    }
}

/// A claimed message's row.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimRow {
    id: String,
    connection_id: i64,
    mail_from: String,
    body: Option<Vec<u8>>,
    attempts: i64,
    queued_at: i64,
    next_attempt_at: i64,
}

impl ClaimRow {
    /// The claimed message (keyed by its due time, to sort the batch), its body moved, not copied.
    pub(super) fn into_claimed(
        self,
        lease_id: i64,
        recipients: Vec<(i64, String)>,
    ) -> (i64, ClaimedMessage) {
        let message = ClaimedMessage {
            recipients,
            id: self.id,
            lease_id,
            connection_id: self.connection_id,
            mail_from: self.mail_from,
            body: self.body.unwrap_or_default(),
            attempts: self.attempts,
            queued_at: self.queued_at,
        };
        (self.next_attempt_at, message)
    }
}

/// Bytes of bodies one claim takes at most, unless its first message alone is bigger: a
/// sender holds one batch in memory (twice over while it is decoded), and a connection has
/// several senders, so a batch of 35 MB messages must not come at once. Ordinary mail still comes
/// a whole batch at a time; the same bound as a lane's ([`crate::outbox::lanes::LANE_BYTES`]).
pub const CLAIM_BYTES: u64 = 8 * 1024 * 1024;

/// How much one claim may take: the oldest due messages, at most `messages` of them whose
/// sizes add up to at most `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimit {
    pub messages: u32,
    pub bytes: u64,
    /// Take the first message even when it alone is bigger than `bytes` (else it could never
    /// be claimed); false when the batch already holds other mail.
    pub oversized_first: bool,
}

/// What a claim took.
#[derive(Debug, Default)]
pub struct Claim {
    /// Oldest first.
    pub messages: Vec<ClaimedMessage>,
    /// No due message of the connection was left unclaimed: the claim stopped for want of mail,
    /// not at a limit (a short claim alone does not say so: it may have stopped at `bytes`).
    pub drained: bool,
    /// When the connection's earliest mail still queued or deferred is due, as the claim left
    /// it (None: none left). Saves the sender asking again once it finds the store drained.
    pub next_due: Option<i64>,
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    Sent(String),
    Deferred(String),
    Failed(String),
}

/// A summary row of the sent-mail log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageSummary {
    pub id: String,
    pub connection: String,
    pub source: String,
    pub submitter: Option<String>,
    pub from: String,
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub size: i64,
    pub status: String,
    pub held_by: Option<String>,
    pub attempts: i64,
    pub queued_at: String,
    pub last_attempt_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub done_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecipientDetail {
    pub address: String,
    pub status: String,
    /// The provider's last reply for this recipient.
    pub reply: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttemptDetail {
    pub at: String,
    pub outcome: String,
    pub detail: Option<String>,
    /// Which transport carried (or tried) the message: `smtp` or `graph` (`null`: none was
    /// tried, the message waited for a sending limit).
    pub transport: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub summary: MessageSummary,
    pub recipient_results: Vec<RecipientDetail>,
    pub attempt_log: Vec<AttemptDetail>,
}

/// Filters for the sent-mail log; results come newest first.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub status: Option<MessageStatus>,
    pub connection: Option<String>,
    /// Unix milliseconds.
    pub since: Option<i64>,
    pub recipient: Option<String>,
    pub submitter: Option<String>,
    /// Only messages of these connections (a scoped API key's); empty matches nothing.
    pub connection_ids: Option<Vec<i64>>,
    /// Return messages older than this id (cursor paging).
    pub before_id: Option<String>,
    pub limit: Option<u32>,
}

pub(crate) fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// The Subject and Message-ID headers, read from the header block only.
pub(super) fn header_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(body.len().min(64 * 1024));
    let head = String::from_utf8_lossy(&body[..end]);
    let (mut subject, mut message_id) = (None, None);
    let mut current: Option<(String, String)> = None;
    let mut finish = |h: Option<(String, String)>| {
        if let Some((name, value)) = h {
            let value = value.trim().to_string();
            match name.to_ascii_lowercase().as_str() {
                "subject" if subject.is_none() => subject = Some(value),
                "message-id" if message_id.is_none() => message_id = Some(value),
                _ => {}
            }
        }
    };
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        finish(current.take());
        current = line
            .split_once(':')
            .map(|(n, v)| (n.to_string(), v.to_string()));
    }
    finish(current);
    (subject.map(|s| decode_subject(&s)), message_id)
}

/// Decodes RFC 2047 encoded words for display; falls back to the raw text.
fn decode_subject(raw: &str) -> String {
    if !raw.contains("=?") {
        return raw.to_string();
    }
    let header = format!("Subject: {raw}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(header.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| raw.to_string())
}

use super::outbox_batch::{Insert, write_batch};

impl Store {
    /// Queues a batch in one transaction (one fsync for all). The relay and the API queue
    /// through the outbox writer instead ([`crate::outbox::Outbox`]), which shares the commit.
    pub async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<Queued>, StoreError> {
        let inserts: Vec<Insert<'_>> = batch
            .iter()
            .map(|message| Insert {
                message,
                lease_until: None,
                lease_id: None,
            })
            .collect();
        let mut conn = self.writer_connection().await?;
        Ok(write_batch(&mut conn, &inserts, &[]).await?.queued)
    }

    /// Queues a batch already claimed for [`Store::lease_ms`] (`sending`, one attempt counted),
    /// for a caller that sends it itself right away (a direct send); returns their claims.
    pub async fn insert_claimed(&self, batch: &[NewMessage]) -> Result<Vec<Lease>, StoreError> {
        let until = now_ms() + self.lease_ms();
        let lease_id = new_lease_id();
        let inserts: Vec<Insert<'_>> = batch
            .iter()
            .map(|message| Insert {
                message,
                lease_until: Some(until),
                lease_id: Some(lease_id),
            })
            .collect();
        let mut conn = self.writer_connection().await?;
        Ok(write_batch(&mut conn, &inserts, &[])
            .await?
            .queued
            .into_iter()
            .map(|q| Lease { id: q.id, lease_id })
            .collect())
    }

    /// Leases up to `limit` due messages of a connection for `lease_ms`, oldest first, with at
    /// most [`CLAIM_BYTES`] of bodies (a bigger message comes alone).
    pub async fn claim_ready(
        &self,
        connection_id: i64,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let limit = ClaimLimit {
            messages: limit,
            bytes: CLAIM_BYTES,
            oversized_first: true,
        };
        Ok(self
            .claim_due(connection_id, limit, lease_ms)
            .await?
            .messages)
    }

    /// Leases the oldest due messages of a connection for `lease_ms`, within `limit`, and says
    /// whether due mail was left behind. One transaction: what it returns is `sending`, and no
    /// other claim can take it until it is recorded, unclaimed or recovered.
    pub async fn claim_due(
        &self,
        connection_id: i64,
        limit: ClaimLimit,
        lease_ms: i64,
    ) -> Result<Claim, StoreError> {
        let _turn = self.write_turn().await;
        match self.bookkeeping() {
            On::Sqlite(pool) => {
                let mut c = pool.acquire().await?;
                claim_due_on(On::Sqlite(&mut *c), connection_id, limit, lease_ms).await
            }
            On::Postgres(pool) => {
                let mut c = pool.acquire().await?;
                claim_due_on(On::Postgres(&mut *c), connection_id, limit, lease_ms).await
            }
        }
    }
}

/// The earliest due time of a connection's mail still queued or deferred (from `messages_due`).
pub(super) const NEXT_DUE: &str = "SELECT MIN(next_attempt_at) FROM messages WHERE connection_id = ? \
     AND status IN ('queued', 'deferred')";

/// A claim's bindings, in the order both backends' statements number them: lease id, lease
/// end, attempt time, connection, now, then the limit's messages, bytes and oversized-first.
macro_rules! bind_claim {
    ($query:expr, $lease_id:expr, $t:expr, $lease_ms:expr, $connection_id:expr, $limit:expr) => {
        $query
            .bind($lease_id)
            .bind($t + $lease_ms)
            .bind($t)
            .bind($connection_id)
            .bind($t)
            .bind(i64::from($limit.messages))
            .bind(i64::try_from($limit.bytes).unwrap_or(i64::MAX))
            .bind(i64::from($limit.oversized_first))
    };
}

/// [`Store::claim_due`] on a given database connection: on SQLite, the outbox writer's own
/// (see `outbox::queue`), so that claims never take the write lock against the writer.
pub async fn claim_due_on(
    conn: On<&mut sqlx::SqliteConnection, &mut sqlx::PgConnection>,
    connection_id: i64,
    limit: ClaimLimit,
    lease_ms: i64,
) -> Result<Claim, StoreError> {
    match conn {
        On::Sqlite(c) => {
            let mut tx = sqlx::Connection::begin(c).await?;
            let claim =
                claim_sqlite::claim_in(&mut tx, connection_id, limit, lease_ms, Default::default())
                    .await?;
            tx.commit().await?;
            Ok(claim)
        }
        On::Postgres(c) => claim_postgres::claim(c, connection_id, limit, lease_ms).await,
    }
}

/// Nothing due now is left unclaimed.
pub(super) fn drained(next_due: Option<i64>, now: i64) -> bool {
    next_due.is_none_or(|at| at > now)
}

/// RETURNING comes in no set order: the batch in claim order (due time, then id).
pub(super) fn in_claim_order(mut out: Vec<(i64, ClaimedMessage)>) -> Vec<ClaimedMessage> {
    out.sort_by(|(a, m), (b, n)| (a, &m.id).cmp(&(b, &n.id)));
    out.into_iter().map(|(_, m)| m).collect()
}

impl Store {
    /// Leases one queued message by id (a direct send), unless a worker claimed it first.
    pub async fn claim_message(
        &self,
        id: &str,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let lease_id = new_lease_id();
        let done = on!(self.db(), |pool, q| {
            let t = db_now_ms!(q, pool);
            sqlx::query(
            q.sql("UPDATE messages SET lease_id = ?, status = 'sending', lease_until = ?, attempts = attempts + 1, \
             last_attempt_at = ? WHERE id = ? AND status = 'queued'"),
        )
        .bind(lease_id)
        .bind(t + lease_ms)
        .bind(t)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok((done == 1).then(|| Lease {
            id: id.to_string(),
            lease_id,
        }))
    }

    /// Records one attempt's per-recipient outcomes and moves the message on:
    /// any deferred recipient → `deferred` until `retry_at_ms` (or `failed` once `give_up`);
    /// else any sent → `sent`; else `failed`. (Workers record whole batches: `record_attempts`.)
    /// Changes nothing once the claim was taken over (see [`Lease`]): the message's status of
    /// the moment is returned.
    pub async fn record_attempt(
        &self,
        claim: &Lease,
        outcomes: &[(i64, RecipientOutcome)],
        retry_at_ms: i64,
        give_up: bool,
        transport: Option<&str>,
    ) -> Result<MessageStatus, StoreError> {
        let status = on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            let lost = super::attempts::lost_claims(
                super::On::from(&mut *tx),
                std::slice::from_ref(claim),
            )
            .await?;
            let status = match lost.into_iter().next().flatten() {
                Some(now) => now,
                None => {
                    super::attempts::recipients_in(
                        super::On::from(&mut *tx),
                        now_ms(),
                        &claim.id,
                        outcomes,
                        retry_at_ms,
                        give_up,
                        transport,
                    )
                    .await?
                }
            };
            tx.commit().await?;
            status
        });
        Ok(status)
    }

    /// A whole attempt failed before any recipient was tried (connection refused, AUTH failed...).
    /// Fenced as [`Store::record_attempt`] is.
    pub async fn defer_message(
        &self,
        claim: &Lease,
        reason: &str,
        retry_at_ms: i64,
        give_up: bool,
        transport: Option<&str>,
    ) -> Result<MessageStatus, StoreError> {
        let status = on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            let lost = super::attempts::lost_claims(
                super::On::from(&mut *tx),
                std::slice::from_ref(claim),
            )
            .await?;
            let status = match lost.into_iter().next().flatten() {
                Some(now) => now,
                None => {
                    super::attempts::whole_in(
                        super::On::from(&mut *tx),
                        now_ms(),
                        &claim.id,
                        reason,
                        retry_at_ms,
                        give_up,
                        transport,
                    )
                    .await?
                }
            };
            tx.commit().await?;
            status
        });
        Ok(status)
    }

    /// Returns leased messages to the queue (at start-up: their worker died). At-least-once.
    /// On PostgreSQL other instances may be sending right now: only leases that ran out return.
    pub async fn recover_leases(&self) -> Result<u64, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query(q.pick(
                "UPDATE messages SET status = 'queued', lease_until = NULL, attempts = MAX(attempts - 1, 0) \
                 WHERE status = 'sending'",
                // Rows in id order, skipping those a writer holds (it is recording them now):
                // the writer locks its rows in id order too, so the two never deadlock.
                "UPDATE messages SET status = 'queued', lease_until = NULL, attempts = GREATEST(attempts - 1, 0) \
                 WHERE id IN (SELECT id FROM messages WHERE status = 'sending' \
                 AND lease_until < CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
                 ORDER BY id FOR UPDATE SKIP LOCKED)",
            ))
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// The earliest time a queued or deferred message of the connection is due (ms).
    pub async fn next_due(&self, connection_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_scalar(
            q.sql("SELECT MIN(next_attempt_at) FROM messages WHERE connection_id = ? AND status IN ('queued', 'deferred')"),
        )
        .bind(connection_id)
        .fetch_one(pool)
        .await?
        }))
    }

    /// Holds a connection's waiting mail because the connection cannot send (disabled, needs re-authorization).
    pub async fn hold_connection_mail(
        &self,
        connection_id: i64,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        Ok(on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "UPDATE messages SET status = 'held', held_by = 'connection', last_error = ? \
             WHERE connection_id = ? AND status IN ('queued', 'deferred')",
            ))
            .bind(reason)
            .bind(connection_id)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Releases mail held for the connection's sake (not the admin's holds).
    pub async fn release_connection_mail(&self, connection_id: i64) -> Result<u64, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "UPDATE messages SET status = 'queued', held_by = NULL, next_attempt_at = ? \
             WHERE connection_id = ? AND status = 'held' AND held_by = 'connection'",
            ))
            .bind(now_ms())
            .bind(connection_id)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }
}

impl Store {
    /// Returns claimed but unattempted messages to the queue (shutdown in the middle of a batch,
    /// mail handed to senders that stopped).
    /// Only claims still held are returned (see [`Lease`]).
    pub async fn unclaim(&self, claims: &[Lease]) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        for chunk in claims.chunks(500) {
            on!(self.bookkeeping(), |pool, q| {
                let sql = format!(
                    "UPDATE messages SET status = 'queued', lease_until = NULL, attempts = {}(attempts - 1, 0) \
                     WHERE status = 'sending' AND (id, lease_id) IN (VALUES {})",
                    if q.is_postgres() { "GREATEST" } else { "MAX" },
                    vec!["(?, ?)"; chunk.len()].join(", ")
                );
                let mut query = sqlx::query(q.sql_owned(sql));
                for c in chunk {
                    query = query.bind(&c.id).bind(c.lease_id);
                }
                query.execute(pool).await?;
            });
        }
        Ok(())
    }
}

#[path = "claim_postgres.rs"]
mod claim_postgres;
#[path = "claim_sqlite.rs"]
pub(crate) mod claim_sqlite;

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
