//! The outbox writer's cycle on PostgreSQL: one transaction as on SQLite, each table written
//! with one statement over arrays (`UNNEST`), in as few round trips as the work allows: new
//! mail (messages, recipients, the notification) is one statement, the records of attempts
//! where every recipient was accepted another, so a common cycle is BEGIN, the lease check,
//! those two, COMMIT, and a cycle of new mail alone is that one statement. Times come from the database (`now()`: the transaction's start, the
//! same in every statement of the cycle), including the lease of mail handed straight to a
//! sender, so instances whose clocks differ agree on when a claim runs out.
//!
//! A cycle of delivery records alone does not wait for the WAL flush (`synchronous_commit =
//! off` for it, like SQLite's `NORMAL`): at-least-once allows resending what was sent but not
//! recorded; new mail always waits (its `250`).

use sqlx::{Connection as _, PgConnection};

use super::{
    HEADER_SCAN, Insert, NEW_MAIL_CHANNEL, Written, find_duplicates, fresh, record_one,
    sent_replies,
};
use crate::store::attempts::{Attempt, lost_claims};
use crate::store::messages::{MessageStatus, Queued, header_fields, now_ms};
use crate::store::{Backend, Conn, StoreError};

/// The database's time in ms at the transaction's start, as SQL.
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)";

pub(super) async fn write_batch(
    conn: &mut PgConnection,
    inserts: &[Insert<'_>],
    records: &[Attempt],
) -> Result<Written, StoreError> {
    if records.is_empty() && inserts.iter().all(|i| i.message.idempotency_key.is_none()) {
        // New mail alone (the common cycle of an instance that does not own the connection):
        // one statement, its own transaction, one round trip.
        let queued: Vec<Queued> = inserts.iter().map(|_| new_queued()).collect();
        let new = fresh(inserts, &queued);
        if !new.is_empty() {
            insert_new(conn, &new).await?;
        }
        return Ok(Written {
            queued,
            statuses: Vec::new(),
        });
    }
    let mut tx = conn.begin().await?;
    if inserts.is_empty() {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    let mut queued: Vec<Queued> = inserts.iter().map(|_| new_queued()).collect();
    if inserts.iter().any(|i| i.message.idempotency_key.is_some()) {
        find_duplicates(Conn::from(&mut *tx), inserts, &mut queued).await?;
    }
    let mut statuses: Vec<MessageStatus> = Vec::with_capacity(records.len());
    let mut sent: Vec<(&Attempt, Vec<(i64, &str)>)> = Vec::new();
    // Records of claims taken over by another instance change nothing (see `lost_claims`).
    let claims: Vec<_> = records.iter().map(Attempt::lease).collect();
    let lost = if records.is_empty() {
        Vec::new()
    } else {
        lost_claims(Conn::from(&mut *tx), &claims).await?
    };
    // The unusual records (a recipient refused or deferred, the whole attempt failed) are
    // written one at a time with the statements both backends share, at the database's time.
    let mut t: Option<i64> = None;
    for (a, lost) in records.iter().zip(lost) {
        if let Some(now) = lost {
            statuses.push(now);
            continue;
        }
        if let Some(replies) = sent_replies(a) {
            sent.push((a, replies));
            statuses.push(MessageStatus::Sent);
            continue;
        }
        let t = match t {
            Some(t) => t,
            None => *t.insert(db_now_ms!(Backend::Postgres, &mut *tx)),
        };
        statuses.push(record_one(Conn::from(&mut *tx), t, a).await?);
    }

    let new = fresh(inserts, &queued);
    if !new.is_empty() {
        insert_new(&mut tx, &new).await?;
    }
    if !sent.is_empty() {
        record_sent(&mut tx, &sent).await?;
    }
    tx.commit().await?;
    Ok(Written { queued, statuses })
}

fn new_queued() -> Queued {
    Queued {
        id: uuid::Uuid::now_v7().simple().to_string(),
        duplicate: false,
    }
}

/// New messages, their bodies, their recipients and (when some wait in the queue) the notification for the
/// other instances, in one statement: the recipients' foreign keys are checked at its end,
/// when the messages are in.
async fn insert_new(tx: &mut PgConnection, new: &[(&Insert<'_>, &str)]) -> Result<(), StoreError> {
    let host_now = now_ms();
    let mut m = PgMessages::default();
    for (insert, id) in new {
        let msg = insert.message;
        let (subject, message_id) = header_fields(&msg.body[..msg.body.len().min(HEADER_SCAN)]);
        m.id.push(id.to_string());
        m.connection_id.push(msg.connection_id);
        m.connection_name.push(msg.connection_name.clone());
        m.source.push(msg.source.as_str().to_string());
        m.submitter.push(msg.submitter.clone());
        m.mail_from.push(msg.mail_from.clone());
        m.subject.push(subject);
        m.message_id.push(message_id);
        m.size.push(msg.body.len() as i64);
        m.body.push(msg.body.as_slice());
        // A handed-over claim's lease as a duration, counted from the database's time.
        m.lease_for
            .push(insert.lease_until.map(|until| (until - host_now).max(0)));
        m.lease_id.push(insert.lease_id);
        m.idempotency_key.push(msg.idempotency_key.clone());
        for (pos, r) in msg.recipients.iter().enumerate() {
            m.r_message.push(id.to_string());
            m.r_position.push(pos as i64);
            m.r_address.push(r.clone());
        }
    }
    let sql = format!(
        "WITH m AS (INSERT INTO messages (id, connection_id, connection_name, source, submitter, \
         mail_from, subject, message_id, size, status, attempts, queued_at, last_attempt_at, \
         next_attempt_at, lease_until, idempotency_key, lease_id) \
         SELECT id, cid, cname, src, sub, mfrom, subj, mid, size, \
         CASE WHEN lf IS NULL THEN 'queued' ELSE 'sending' END, \
         CASE WHEN lf IS NULL THEN 0 ELSE 1 END, {NOW_MS}, \
         CASE WHEN lf IS NULL THEN NULL ELSE {NOW_MS} END, {NOW_MS}, {NOW_MS} + lf, ik, li \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::bigint[], $11::bigint[], $12::text[], \
         $13::bigint[]) AS v(id, cid, cname, src, sub, mfrom, subj, mid, size, lf, ik, li)), \
         b AS (INSERT INTO message_bodies (id, body) \
         SELECT id, body FROM UNNEST($1::text[], $10::bytea[]) AS v(id, body)), \
         r AS (INSERT INTO recipients (message_id, position, address, status) \
         SELECT mid, pos, addr, 'pending' FROM UNNEST($14::text[], $15::bigint[], $16::text[]) \
         AS v(mid, pos, addr)) \
         SELECT pg_notify($17, $18::text) WHERE $18::text IS NOT NULL"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&m.id)
        .bind(&m.connection_id)
        .bind(&m.connection_name)
        .bind(&m.source)
        .bind(&m.submitter)
        .bind(&m.mail_from)
        .bind(&m.subject)
        .bind(&m.message_id)
        .bind(&m.size)
        .bind(&m.body)
        .bind(&m.lease_for)
        .bind(&m.idempotency_key)
        .bind(&m.lease_id)
        .bind(&m.r_message)
        .bind(&m.r_position)
        .bind(&m.r_address)
        .bind(NEW_MAIL_CHANNEL)
        // Delivered at commit, once per transaction however many messages it holds.
        .bind(new_mail_payload(new))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Attempts where every recipient was accepted: recipients, messages and the attempt log in one
/// statement. The body is dropped, as for any sent message.
async fn record_sent(
    tx: &mut PgConnection,
    sent: &[(&Attempt, Vec<(i64, &str)>)],
) -> Result<(), StoreError> {
    let (mut ids, mut details, mut transports) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r_ids, mut r_pos, mut r_reply) = (Vec::new(), Vec::new(), Vec::new());
    for (a, replies) in sent {
        ids.push(a.id.as_str());
        transports.push(a.transport);
        details.push(
            replies
                .iter()
                .map(|(_, r)| format!("sent: {r}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        for (pos, reply) in replies {
            r_ids.push(a.id.as_str());
            r_pos.push(*pos);
            r_reply.push(*reply);
        }
    }
    let sql = format!(
        "WITH r AS (UPDATE recipients SET status = 'sent', reply = v.reply, updated_at = {NOW_MS} \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS v(mid, pos, reply) \
         WHERE recipients.message_id = v.mid AND recipients.position = v.pos), \
         m AS (UPDATE messages SET status = 'sent', lease_until = NULL, next_attempt_at = {NOW_MS}, \
         done_at = {NOW_MS}, last_error = NULL WHERE id = ANY($4::text[])), \
         b AS (DELETE FROM message_bodies WHERE id = ANY($4::text[])) \
         INSERT INTO attempts (message_id, at, outcome, detail, transport) \
         SELECT mid, {NOW_MS}, 'sent', detail, tr \
         FROM UNNEST($4::text[], $5::text[], $6::text[]) AS v(mid, detail, tr)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        // Planned for each run (see PER_RUN_PLAN in `outbox_batch`).
        .persistent(false)
        .bind(&r_ids)
        .bind(&r_pos)
        .bind(&r_reply)
        .bind(&ids)
        .bind(&details)
        .bind(&transports)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The longest notification payload sent: PostgreSQL's limit is 8,000 bytes.
const PAYLOAD_MAX: usize = 7_000;

/// What a new-mail notification says: the ids of the connections with new queued (not
/// claimed) mail, comma-separated; empty ("look at the store") when they would not fit; None
/// when all of it went straight to this instance's senders.
pub(super) fn new_mail_payload(new: &[(&Insert<'_>, &str)]) -> Option<String> {
    let mut ids: Vec<i64> = new
        .iter()
        .filter(|(insert, _)| insert.lease_until.is_none())
        .map(|(insert, _)| insert.message.connection_id)
        .collect();
    if ids.is_empty() {
        return None;
    }
    ids.sort_unstable();
    ids.dedup();
    let payload = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    Some(if payload.len() > PAYLOAD_MAX {
        String::new()
    } else {
        payload
    })
}

/// The connections a new-mail notification names: None means "look at the store" (an empty
/// or unreadable payload).
pub fn new_mail_connections(payload: &str) -> Option<Vec<i64>> {
    if payload.is_empty() {
        return None;
    }
    payload.split(',').map(|id| id.parse().ok()).collect()
}

/// New messages and their recipients as columns, for `UNNEST`.
#[derive(Default)]
struct PgMessages<'a> {
    id: Vec<String>,
    connection_id: Vec<i64>,
    connection_name: Vec<String>,
    source: Vec<String>,
    submitter: Vec<Option<String>>,
    mail_from: Vec<String>,
    subject: Vec<Option<String>>,
    message_id: Vec<Option<String>>,
    size: Vec<i64>,
    body: Vec<&'a [u8]>,
    /// ms from the database's now to the lease's end; NULL: queued, not handed over.
    lease_for: Vec<Option<i64>>,
    lease_id: Vec<Option<i64>>,
    idempotency_key: Vec<Option<String>>,
    r_message: Vec<String>,
    r_position: Vec<i64>,
    r_address: Vec<String>,
}
