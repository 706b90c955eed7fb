//! Recording delivery attempts: per-recipient outcomes, the message's next status, the attempt
//! log. Workers record whole batches through the outbox writer ([`super::outbox_batch`]), with
//! the new mail of the moment or, alone, without waiting for the disk: a power loss may lose the
//! last records, and at-least-once allows resending what was sent but not recorded.

use std::collections::HashMap;

use super::messages::{Lease, MessageStatus, RecipientOutcome};
use super::{Conn, On, Store, StoreError};

/// What one attempt at one message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptRecord {
    /// Each tried recipient's outcome.
    Recipients(Vec<(i64, RecipientOutcome)>),
    /// The whole attempt failed before any recipient was tried (connection refused, AUTH
    /// failed...): `deferred`, or `failed` for every waiting recipient once `give_up`.
    Whole(String),
}

/// One attempt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: String,
    /// The claim the attempt was made under: recorded only while it still holds (see
    /// [`super::messages::Lease`]).
    pub lease_id: i64,
    pub record: AttemptRecord,
    /// When a deferred message is next tried (unix ms).
    pub retry_at_ms: i64,
    /// The message has waited too long (or can never pass): what is not sent fails.
    pub give_up: bool,
    /// Which transport carried (or tried) it: `smtp` or `graph`; `None` when none was tried
    /// (the message waits for a sending limit).
    pub transport: Option<&'static str>,
}

impl Attempt {
    /// The claim this attempt was made under.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id.clone(),
            lease_id: self.lease_id,
        }
    }
}

impl Store {
    /// Records every attempt in one transaction; returns each message's new status, in order.
    /// (The delivery workers record through the outbox writer, in its shared commits.)
    pub async fn record_attempts(
        &self,
        batch: &[Attempt],
    ) -> Result<Vec<MessageStatus>, StoreError> {
        let mut conn = self.writer_connection().await?;
        Ok(super::outbox_batch::write_batch(&mut conn, &[], batch)
            .await?
            .statuses)
    }
}

/// Of `claims` (in one transaction with the records that follow), the ones taken over by a newer
/// claim, with their message's status of the moment (`None`: still held, record it; a message
/// that is gone counts as held, so its record fails as before). The rows stay locked until the
/// transaction ends, so no claim takes them over between this check and the records: a write
/// on SQLite (which takes the database's write lock first, on its newest state), `FOR UPDATE`
/// on PostgreSQL (a takeover's UPDATE waits for it, then sees the record).
pub(super) async fn lost_claims(
    tx: Conn<'_>,
    claims: &[Lease],
) -> Result<Vec<Option<MessageStatus>>, StoreError> {
    lost_claims_opening(tx, "", claims).await
}

/// [`lost_claims`] as the command that also opens the transaction with `opening` (SQLite's
/// outbox writer: `PRAGMA synchronous = …; BEGIN;`), one round trip to sqlx's SQLite thread
/// instead of two. `opening` is for SQLite only: on PostgreSQL the caller opened the transaction.
pub(super) async fn lost_claims_opening(
    tx: Conn<'_>,
    opening: &str,
    claims: &[Lease],
) -> Result<Vec<Option<MessageStatus>>, StoreError> {
    let mut now: HashMap<String, (String, Option<i64>)> = HashMap::with_capacity(claims.len());
    match tx {
        On::Sqlite(tx) => {
            // One shape whatever the batch size (a JSON array of `[id, lease]`), so the writer's
            // connection keeps it prepared (one per opening). First a no-op UPDATE of them all: its
            // write lock keeps the rows as read until this transaction commits. Then only the
            // claims taken over come back, usually none: each row is a hand-off from sqlx's
            // thread, and a batch of 32 records used to bring 32.
            let pairs: Vec<(&str, i64)> =
                claims.iter().map(|c| (c.id.as_str(), c.lease_id)).collect();
            let pairs = serde_json::to_string(&pairs).expect("strings serialise");
            let sql = format!(
                "{opening}UPDATE messages SET lease_id = lease_id \
                 WHERE id IN (SELECT value ->> 0 FROM json_each(?)); \
                 SELECT m.id, m.status, m.lease_id FROM json_each(?) AS c \
                 JOIN messages m ON m.id = c.value ->> 0 WHERE m.lease_id IS NOT c.value ->> 1"
            );
            let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(&pairs)
                .bind(&pairs)
                .fetch_all(&mut *tx)
                .await?;
            now.extend(rows.into_iter().map(|(id, s, l)| (id, (s, l))));
        }
        On::Postgres(tx) => {
            let ids: Vec<&str> = claims.iter().map(|c| c.id.as_str()).collect();
            let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
                "SELECT id, status, lease_id FROM messages WHERE id = ANY($1::text[]) \
                 ORDER BY id FOR UPDATE",
            )
            // Planned for each run (see `PER_RUN_PLAN` in `outbox_batch`).
            .persistent(false)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            now.extend(rows.into_iter().map(|(id, s, l)| (id, (s, l))));
        }
    }
    claims
        .iter()
        .map(|c| match now.get(&c.id) {
            Some((status, lease)) if *lease != Some(c.lease_id) => status
                .parse()
                .map(Some)
                .map_err(|e: super::messages::StatusError| StoreError::Corrupt(e.to_string())),
            _ => Ok(None),
        })
        .collect()
}

/// Per-recipient outcomes: any deferred recipient → `deferred` until `retry_at_ms` (or
/// `failed` once `give_up`); else any sent → `sent`; else `failed`.
pub(super) async fn recipients_in(
    tx: Conn<'_>,
    t: i64,
    id: &str,
    outcomes: &[(i64, RecipientOutcome)],
    retry_at_ms: i64,
    give_up: bool,
    transport: Option<&str>,
) -> Result<MessageStatus, StoreError> {
    on!(tx, |tx, q| {
        for (pos, outcome) in outcomes {
            let (status, reply) = match outcome {
                RecipientOutcome::Sent(r) => ("sent", r),
                RecipientOutcome::Deferred(r) if give_up => ("failed", r),
                RecipientOutcome::Deferred(r) => ("deferred", r),
                RecipientOutcome::Failed(r) => ("failed", r),
            };
            sqlx::query(q.sql("UPDATE recipients SET status = ?, reply = ?, updated_at = ? WHERE message_id = ? AND position = ?"))
            .bind(status)
            .bind(reply)
            .bind(t)
            .bind(id)
            .bind(pos)
            .execute(&mut *tx)
            .await?;
        }
        let last_error = outcomes.iter().find_map(|(_, o)| match o {
            RecipientOutcome::Deferred(r) | RecipientOutcome::Failed(r) => Some(r.clone()),
            RecipientOutcome::Sent(_) => None,
        });
        // The new status from every recipient's, in the same statement: any still waiting →
        // deferred; else any sent → sent (the body is dropped); else failed.
        let status: String = sqlx::query_scalar(q.sql(
        "UPDATE messages SET status = s.st, lease_until = NULL, next_attempt_at = ?, \
         done_at = CASE WHEN s.st IN ('sent', 'failed') THEN ? END, last_error = ? \
         FROM (SELECT CASE \
           WHEN EXISTS (SELECT 1 FROM recipients WHERE message_id = ? AND status IN ('deferred', 'pending')) THEN 'deferred' \
           WHEN EXISTS (SELECT 1 FROM recipients WHERE message_id = ? AND status = 'sent') THEN 'sent' \
           ELSE 'failed' END AS st) AS s \
         WHERE id = ? RETURNING status",
    ))
    .bind(retry_at_ms)
    .bind(t)
    .bind(&last_error)
    .bind(id)
    .bind(id)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
        let status: MessageStatus = status
            .parse()
            .map_err(|e: super::messages::StatusError| StoreError::Corrupt(e.to_string()))?;
        if status == MessageStatus::Sent {
            sqlx::query(q.sql("DELETE FROM message_bodies WHERE id = ?"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let detail = outcomes
            .iter()
            .map(|(_, o)| match o {
                RecipientOutcome::Sent(r) => format!("sent: {r}"),
                RecipientOutcome::Deferred(r) => format!("deferred: {r}"),
                RecipientOutcome::Failed(r) => format!("failed: {r}"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        log_attempt(Conn::from(&mut *tx), id, t, status, &detail, transport).await?;
        Ok(status)
    })
}

/// A whole attempt failed before any recipient was tried.
pub(super) async fn whole_in(
    tx: Conn<'_>,
    t: i64,
    id: &str,
    reason: &str,
    retry_at_ms: i64,
    give_up: bool,
    transport: Option<&str>,
) -> Result<MessageStatus, StoreError> {
    let status = if give_up {
        MessageStatus::Failed
    } else {
        MessageStatus::Deferred
    };
    on!(tx, |tx, q| {
        sqlx::query(q.sql(
        "UPDATE messages SET status = ?, lease_until = NULL, next_attempt_at = ?, last_error = ?, done_at = ? WHERE id = ?",
    ))
    .bind(status.as_str())
    .bind(retry_at_ms)
    .bind(reason)
    .bind(give_up.then_some(t))
    .bind(id)
    .execute(&mut *tx)
    .await?;
        if give_up {
            sqlx::query(q.sql("UPDATE recipients SET status = 'failed', reply = ?, updated_at = ? WHERE message_id = ? AND status IN ('pending', 'deferred')"))
            .bind(reason)
            .bind(t)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        log_attempt(Conn::from(&mut *tx), id, t, status, reason, transport).await?;
        Ok(status)
    })
}

async fn log_attempt(
    tx: Conn<'_>,
    id: &str,
    t: i64,
    status: MessageStatus,
    detail: &str,
    transport: Option<&str>,
) -> Result<(), StoreError> {
    on!(tx, |tx, q| {
        sqlx::query(q.sql(
            "INSERT INTO attempts (message_id, at, outcome, detail, transport) VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(id)
        .bind(t)
        .bind(status.as_str())
        .bind(detail)
        .bind(transport)
        .execute(&mut *tx)
        .await?;
    });
    Ok(())
}
