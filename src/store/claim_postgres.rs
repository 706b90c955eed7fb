//! A claim on PostgreSQL, in a transaction of its own on any pooled connection: row locks, not
//! one write lock, so claims go straight to the store (`FOR UPDATE SKIP LOCKED`), not through
//! the outbox writer as SQLite's do (see `claim_sqlite`).

use super::{Claim, ClaimLimit, ClaimRow, NEXT_DUE, drained, in_claim_order, new_lease_id};
use crate::store::{Backend, StoreError};

/// [`super::claim_due_on`] on PostgreSQL: rows another instance is claiming are skipped, not
/// waited for.
pub(super) async fn claim(
    c: &mut sqlx::PgConnection,
    connection_id: i64,
    limit: ClaimLimit,
    lease_ms: i64,
) -> Result<Claim, StoreError> {
    let mut tx = sqlx::Connection::begin(c).await?;
    let t = db_now_ms!(Backend::Postgres, &mut *tx);
    let lease_id = new_lease_id();
    // The first `messages` due rows in claim order (read from the `messages_due` index, with
    // each row's `size` but not its body), cut where their running size passes `bytes`.
    let rows = sqlx::query_as(
        "WITH due AS ( \
             SELECT id, size, next_attempt_at FROM messages WHERE connection_id = $4 \
             AND status IN ('queued', 'deferred') AND next_attempt_at <= $5 \
             ORDER BY next_attempt_at, id LIMIT $6 FOR UPDATE SKIP LOCKED), \
         picked AS (SELECT id FROM ( \
             SELECT id, ROW_NUMBER() OVER w AS n, SUM(size) OVER w AS total FROM due \
             WINDOW w AS (ORDER BY next_attempt_at, id ROWS UNBOUNDED PRECEDING)) AS runs \
             WHERE total <= $7 OR n <= $8) \
         UPDATE messages SET lease_id = $1, status = 'sending', lease_until = $2, \
         attempts = attempts + 1, last_attempt_at = $3 WHERE id IN (SELECT id FROM picked) \
         RETURNING id, connection_id, mail_from, \
         (SELECT b.body FROM message_bodies b WHERE b.id = messages.id) AS body, attempts, queued_at, next_attempt_at",
    )
    // Planned per run (see PER_RUN_PLAN in `outbox_batch`).
    .persistent(false);
    let rows: Vec<ClaimRow> = bind_claim!(rows, lease_id, t, lease_ms, connection_id, limit)
        .fetch_all(&mut *tx)
        .await?;
    // Asked in the same transaction, so no other claim comes between: exact, unlike inferring
    // it from a short claim. Rows other instances hold locked count as waiting: they are
    // someone's claim in progress.
    let next_due: Option<i64> = sqlx::query_scalar(Backend::Postgres.sql(NEXT_DUE))
        .bind(connection_id)
        .fetch_one(&mut *tx)
        .await?;
    // The waiting recipients of every claimed message, in one query.
    let mut by_message: std::collections::HashMap<String, Vec<(i64, String)>> =
        std::collections::HashMap::with_capacity(rows.len());
    if !rows.is_empty() {
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let ids = serde_json::to_string(&ids).expect("strings serialise");
        // An array built once (an init plan), not `IN (SELECT …)`: the planner takes a
        // set-returning function for 100 rows and hashes them against a scan of every
        // recipient (measured: 1.1 ms for 13 messages, against an index scan).
        let recipients = sqlx::query_as::<_, (String, i64, String)>(
            "SELECT message_id, position, address FROM recipients \
                 WHERE message_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) \
                 AND status IN ('pending', 'deferred') ORDER BY message_id, position",
        )
        .persistent(false) // PER_RUN_PLAN
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        for (message_id, position, address) in recipients {
            by_message
                .entry(message_id)
                .or_default()
                .push((position, address));
        }
    }
    let messages = rows
        .into_iter()
        .map(|row| {
            let recipients = by_message.remove(&row.id).unwrap_or_default();
            row.into_claimed(lease_id, recipients)
        })
        .collect();
    tx.commit().await?;
    Ok(Claim {
        messages: in_claim_order(messages),
        drained: drained(next_due, t),
        next_due,
    })
}
