//! One outbox writer cycle in one transaction: the messages coming in and the attempts being
//! recorded, so one fsync covers both (group commit).
//!
//! The common case (new messages, attempts where every recipient was accepted) is written with a
//! few multi-row statements sent as one or two commands: each statement sent separately costs a
//! trip to SQLite's thread and back, which was most of the relay's CPU time. The statements are
//! padded to a few sizes so that they stay prepared.

use std::collections::HashMap;

use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments as _, Connection as _, PgConnection, SqliteConnection};

use super::attempts::{Attempt, AttemptRecord, lost_claims, recipients_in, whole_in};
use super::messages::{MessageStatus, NewMessage, Queued, RecipientOutcome, header_fields, now_ms};
use super::{Backend, Conn, On, Store, StoreError};

/// The outbox writer's own connection, on the active backend.
pub type WriterConnection = On<SqliteConnection, PgConnection>;

/// The channel of new-mail notifications between instances sharing a PostgreSQL store.
pub const NEW_MAIL_CHANNEL: &str = "postern_new_mail";

/// Rows per multi-row statement: well under SQLite's limits on bound values (32,766).
const ROWS_PER_STATEMENT: usize = 200;

/// Prepared statements the writer keeps: the padded shapes of new mail and of records (see
/// [`padded`]), with and without the opening of the transaction, and the senders' claims (on
/// SQLite they go through the writer: see `outbox::queue`).
const WRITER_STATEMENTS: usize = 20;

/// A message to insert; `lease_until` set means it goes straight to a sender, claimed already
/// (under the claim `lease_id`).
#[derive(Debug, Clone, Copy)]
pub struct Insert<'a> {
    pub message: &'a NewMessage,
    pub lease_until: Option<i64>,
    pub lease_id: Option<i64>,
}

/// What one cycle wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// One per insert, in order.
    pub queued: Vec<Queued>,
    /// One per record, in order.
    pub statuses: Vec<MessageStatus>,
}

impl Store {
    /// A connection of the writer's own, outside the pool: the hot path never waits for a
    /// pooled connection. Its statements differ with the batch size, so it remembers only the
    /// most recent few (each prepared multi-row statement holds tens of KiB).
    pub async fn writer_connection(&self) -> Result<WriterConnection, StoreError> {
        use sqlx::ConnectOptions as _;
        Ok(match &self.db {
            super::Db::Sqlite { options, .. } => On::Sqlite(
                options
                    .clone()
                    .statement_cache_capacity(WRITER_STATEMENTS)
                    .connect()
                    .await?,
            ),
            super::Db::Postgres { options, .. } => On::Postgres(options.connect().await?),
        })
    }
}

impl Store {
    /// A listener for new mail committed by any instance (PostgreSQL's `LISTEN`); None on
    /// SQLite, where one process writes and tells its own scheduler directly. Notifications
    /// sent while the listener reconnects are lost: the scheduler's periodic look at the store
    /// covers those.
    pub async fn new_mail_listener(
        &self,
    ) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        match &self.db {
            super::Db::Sqlite { .. } => Ok(None),
            super::Db::Postgres { pool, .. } => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(NEW_MAIL_CHANNEL).await?;
                Ok(Some(listener))
            }
        }
    }
}

/// Writes `inserts` and `records` in one transaction on `conn` (a `synchronous=FULL` connection
/// from [`Store::writer_connection`]): when this returns, all of it is on disk.
pub async fn write_batch(
    conn: &mut WriterConnection,
    inserts: &[Insert<'_>],
    records: &[Attempt],
) -> Result<Written, StoreError> {
    match conn {
        On::Sqlite(conn) => write_batch_sqlite(conn, inserts, records).await,
        On::Postgres(conn) => write_batch_postgres(conn, inserts, records).await,
    }
}

async fn write_batch_sqlite(
    conn: &mut SqliteConnection,
    inserts: &[Insert<'_>],
    records: &[Attempt],
) -> Result<Written, StoreError> {
    let result = write_in(conn, now_ms(), inserts, records).await;
    if result.is_err() {
        // A statement failed inside the transaction: end it, so the next cycle starts clean.
        // (Without an open transaction SQLite refuses the ROLLBACK, which is fine.)
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

/// Every recipient accepted: the common case, recorded in bulk.
fn sent_replies(a: &Attempt) -> Option<Vec<(i64, &str)>> {
    match &a.record {
        AttemptRecord::Recipients(outcomes) if !outcomes.is_empty() => outcomes
            .iter()
            .map(|(pos, o)| match o {
                RecipientOutcome::Sent(reply) => Some((*pos, reply.as_str())),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

async fn write_in(
    conn: &mut SqliteConnection,
    t: i64,
    inserts: &[Insert<'_>],
    records: &[Attempt],
) -> Result<Written, StoreError> {
    let bulk: Vec<Option<Vec<(i64, &str)>>> = records.iter().map(sent_replies).collect();
    let keyed = inserts.iter().any(|i| i.message.idempotency_key.is_some());
    let one_by_one = bulk.iter().any(Option::is_none);
    // New mail waits for the disk: its `250` promises it survives a power loss. A cycle of
    // delivery records alone does not: after a power loss the last records may be gone and those
    // messages are sent again, which at-least-once allows; the next new mail's commit makes
    // everything before it durable too.
    let durability = if inserts.is_empty() {
        "PRAGMA synchronous = NORMAL;"
    } else {
        "PRAGMA synchronous = FULL;"
    };
    let begin = format!("{durability} BEGIN;\n");

    // Idempotency lookups and unusual attempt records need answers or several statements
    // each: they go first, one statement at a time, inside the same transaction.
    let mut queued: Vec<Queued> = inserts
        .iter()
        .map(|_| Queued {
            id: uuid::Uuid::now_v7().simple().to_string(),
            duplicate: false,
        })
        .collect();
    let mut statuses: Vec<Option<MessageStatus>> = vec![None; records.len()];
    let mut begun = false;
    if keyed || one_by_one || !records.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(begin.clone()))
            .execute(&mut *conn)
            .await?;
        begun = true;
    }
    // Records of claims taken over by another worker change nothing: their status is the
    // message's of the moment.
    let claims: Vec<_> = records.iter().map(Attempt::lease).collect();
    let lost = if records.is_empty() {
        Vec::new()
    } else {
        lost_claims(Conn::from(&mut *conn), &claims).await?
    };
    let live = |i: usize| lost.get(i).is_none_or(Option::is_none);
    if keyed || one_by_one {
        find_duplicates(Conn::from(&mut *conn), inserts, &mut queued).await?;
        for (i, ((a, bulk), status)) in records
            .iter()
            .zip(&bulk)
            .zip(statuses.iter_mut())
            .enumerate()
        {
            if bulk.is_some() || !live(i) {
                continue;
            }
            *status = Some(match &a.record {
                AttemptRecord::Recipients(o) => {
                    recipients_in(
                        Conn::from(&mut *conn),
                        t,
                        &a.id,
                        o,
                        a.retry_at_ms,
                        a.give_up,
                        a.transport,
                    )
                    .await?
                }
                AttemptRecord::Whole(reason) => {
                    whole_in(
                        Conn::from(&mut *conn),
                        t,
                        &a.id,
                        reason,
                        a.retry_at_ms,
                        a.give_up,
                        a.transport,
                    )
                    .await?
                }
            });
        }
    }

    // The rest in at most two commands (new mail; records), the first opening the transaction
    // and the last committing it. Two, not one: each has a few shapes that stay prepared,
    // where their combinations would not.
    let new: Vec<(&Insert<'_>, &str)> = inserts
        .iter()
        .zip(&queued)
        .filter(|(_, q)| !q.duplicate)
        .map(|(insert, q)| (insert, q.id.as_str()))
        .collect();
    let sent: Vec<(&Attempt, &Vec<(i64, &str)>)> = records
        .iter()
        .zip(&bulk)
        .enumerate()
        .filter(|(i, _)| live(*i))
        .filter_map(|(_, (a, b))| b.as_ref().map(|b| (a, b)))
        .collect();
    let mut commands: Vec<(String, SqliteArguments)> = Vec::new();
    if !new.is_empty() {
        let (mut sql, mut args) = (String::new(), SqliteArguments::default());
        push_inserts(&mut sql, &mut args, t, &new)?;
        commands.push((sql, args));
    }
    if !sent.is_empty() {
        let (mut sql, mut args) = (String::new(), SqliteArguments::default());
        push_sent(&mut sql, &mut args, t, &sent)?;
        commands.push((sql, args));
    }
    if commands.is_empty() {
        commands.push((String::new(), SqliteArguments::default()));
    }
    if !begun && let Some((first, _)) = commands.first_mut() {
        first.insert_str(0, &begin);
    }
    if let Some((last, _)) = commands.last_mut() {
        last.push_str("COMMIT;");
    }
    for (sql, args) in commands {
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .execute(&mut *conn)
            .await?;
    }
    for (i, (status, bulk)) in statuses.iter_mut().zip(&bulk).enumerate() {
        if let Some(Some(now)) = lost.get(i) {
            *status = Some(*now);
        } else if bulk.is_some() {
            *status = Some(MessageStatus::Sent);
        }
    }
    Ok(Written {
        queued,
        statuses: statuses.into_iter().flatten().collect(),
    })
}

/// Marks inserts whose idempotency key was seen before (in the store or earlier in the batch).
async fn find_duplicates(
    conn: Conn<'_>,
    inserts: &[Insert<'_>],
    queued: &mut [Queued],
) -> Result<(), StoreError> {
    let mut seen: HashMap<(Option<&str>, &str), usize> = HashMap::new();
    on!(conn, |conn, q| {
        for (i, insert) in inserts.iter().enumerate() {
            let m = insert.message;
            let Some(key) = m.idempotency_key.as_deref() else {
                continue;
            };
            let earlier = seen.get(&(m.submitter.as_deref(), key)).copied();
            if let Some(first) = earlier {
                queued[i] = Queued {
                    id: queued[first].id.clone(),
                    duplicate: true,
                };
                continue;
            }
            let existing: Option<String> = sqlx::query_scalar(q.pick(
            "SELECT id FROM messages WHERE submitter IS ? AND idempotency_key = ?",
            "SELECT id FROM messages WHERE submitter IS NOT DISTINCT FROM ? AND idempotency_key = ?",
        ))
        .bind(&m.submitter)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
            if let Some(id) = existing {
                queued[i] = Queued {
                    id,
                    duplicate: true,
                };
            }
            seen.insert((m.submitter.as_deref(), key), i);
        }
    });
    Ok(())
}

fn add<'t, T: sqlx::Encode<'t, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    args: &mut SqliteArguments,
    value: T,
) -> Result<(), StoreError> {
    args.add(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot bind a value: {e}")))
}

/// `count` copies of `row`, comma-separated: `(?, ?), (?, ?)`.
fn repeat_rows(sql: &mut String, count: usize, row: &str) {
    for i in 0..count {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
}

/// The rows a statement is written for: the next power of two, so the writer prepares a few
/// statement shapes and keeps them, instead of one per batch size. Unused rows are NULLs,
/// which the statements skip.
fn padded(rows: usize) -> usize {
    if rows > ROWS_PER_STATEMENT {
        return rows;
    }
    rows.next_power_of_two().min(ROWS_PER_STATEMENT)
}

/// `n` NULLs.
fn add_nulls(args: &mut SqliteArguments, n: usize) -> Result<(), StoreError> {
    (0..n).try_for_each(|_| add(args, None::<i64>))
}

/// Bytes of a new message searched for its Subject and Message-ID.
const HEADER_SCAN: usize = 64 * 1024;

const MESSAGE_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const MESSAGE_COLUMNS: usize = 18;

fn push_inserts(
    sql: &mut String,
    args: &mut SqliteArguments,
    t: i64,
    new: &[(&Insert<'_>, &str)],
) -> Result<(), StoreError> {
    for chunk in new.chunks(ROWS_PER_STATEMENT) {
        let rows = padded(chunk.len());
        sql.push_str(
            "INSERT INTO messages (id, connection_id, connection_name, source, submitter, mail_from, \
             subject, message_id, size, body, status, attempts, queued_at, last_attempt_at, \
             next_attempt_at, lease_until, idempotency_key, lease_id) SELECT * FROM (VALUES ",
        );
        repeat_rows(sql, rows, MESSAGE_ROW);
        sql.push_str(") WHERE column1 IS NOT NULL;\n");
        for (insert, id) in chunk {
            let m = insert.message;
            // Only the start of the header section: a 35 MB header block (one folded Subject,
            // say) would otherwise be copied and stored as a 35 MB subject.
            let (subject, message_id) = header_fields(&m.body[..m.body.len().min(HEADER_SCAN)]);
            let claimed = insert.lease_until.is_some();
            add(args, *id)?;
            add(args, m.connection_id)?;
            add(args, m.connection_name.as_str())?;
            add(args, m.source.as_str())?;
            add(args, m.submitter.as_deref())?;
            add(args, m.mail_from.as_str())?;
            add(args, subject)?;
            add(args, message_id)?;
            add(args, m.body.len() as i64)?;
            add(args, m.body.as_slice())?;
            add(args, if claimed { "sending" } else { "queued" })?;
            add(args, i64::from(claimed))?;
            add(args, t)?;
            add(args, claimed.then_some(t))?;
            add(args, t)?;
            add(args, insert.lease_until)?;
            add(args, m.idempotency_key.as_deref())?;
            add(args, insert.lease_id)?;
        }
        add_nulls(args, (rows - chunk.len()) * MESSAGE_COLUMNS)?;
    }
    let rows: Vec<(&str, usize, &str)> = new
        .iter()
        .flat_map(|(insert, id)| {
            insert
                .message
                .recipients
                .iter()
                .enumerate()
                .map(move |(pos, r)| (*id, pos, r.as_str()))
        })
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let n = padded(chunk.len());
        sql.push_str(
            "INSERT INTO recipients (message_id, position, address, status) \
             SELECT column1, column2, column3, 'pending' FROM (VALUES ",
        );
        repeat_rows(sql, n, "(?, ?, ?)");
        sql.push_str(") WHERE column1 IS NOT NULL;\n");
        for (id, pos, address) in chunk {
            add(args, *id)?;
            add(args, *pos as i64)?;
            add(args, *address)?;
        }
        add_nulls(args, (n - chunk.len()) * 3)?;
    }
    Ok(())
}

/// Attempts where every recipient was accepted: recipients, messages and the attempt log in
/// three statements per chunk. The body is dropped, as for any sent message.
fn push_sent(
    sql: &mut String,
    args: &mut SqliteArguments,
    t: i64,
    sent: &[(&Attempt, &Vec<(i64, &str)>)],
) -> Result<(), StoreError> {
    for chunk in sent.chunks(ROWS_PER_STATEMENT / 4) {
        let messages = padded(chunk.len());
        let recipients: usize = chunk.iter().map(|(_, r)| r.len()).sum();
        let rows = padded(recipients);
        sql.push_str(
            "UPDATE recipients SET status = 'sent', reply = v.column3, updated_at = ? FROM (VALUES ",
        );
        repeat_rows(sql, rows, "(?, ?, ?)");
        sql.push_str(
            ") AS v WHERE recipients.message_id = v.column1 AND recipients.position = v.column2;\n",
        );
        add(args, t)?;
        for (a, replies) in chunk {
            for (pos, reply) in replies.iter() {
                add(args, a.id.as_str())?;
                add(args, *pos)?;
                add(args, *reply)?;
            }
        }
        add_nulls(args, (rows.max(recipients) - recipients) * 3)?;

        sql.push_str(
            "UPDATE messages SET status = 'sent', lease_until = NULL, next_attempt_at = ?, \
             done_at = ?, last_error = NULL, body = NULL WHERE id IN (",
        );
        repeat_rows(sql, messages, "?");
        sql.push_str(");\n");
        add(args, t)?;
        add(args, t)?;
        for (a, _) in chunk {
            add(args, a.id.as_str())?;
        }
        add_nulls(args, messages - chunk.len())?;

        sql.push_str(
            "INSERT INTO attempts (message_id, at, outcome, detail, transport) \
             SELECT * FROM (VALUES ",
        );
        repeat_rows(sql, messages, "(?, ?, ?, ?, ?)");
        sql.push_str(") WHERE column1 IS NOT NULL;\n");
        for (a, replies) in chunk {
            let detail = replies
                .iter()
                .map(|(_, r)| format!("sent: {r}"))
                .collect::<Vec<_>>()
                .join("\n");
            add(args, a.id.as_str())?;
            add(args, t)?;
            add(args, MessageStatus::Sent.as_str())?;
            add(args, detail)?;
            add(args, a.transport)?;
        }
        add_nulls(args, (messages - chunk.len()) * 5)?;
    }
    Ok(())
}

/// The PostgreSQL writer: one transaction per cycle as on SQLite, each table written with one
/// statement over arrays (`UNNEST`), and one notification for the other instances when new mail
/// was committed (not one per message). A cycle of delivery records alone does not wait for the
/// WAL flush (`synchronous_commit = off` for it, like SQLite's `NORMAL`): at-least-once allows
/// resending what was sent but not recorded; new mail always waits (its `250`).
async fn write_batch_postgres(
    conn: &mut PgConnection,
    inserts: &[Insert<'_>],
    records: &[Attempt],
) -> Result<Written, StoreError> {
    let q = Backend::Postgres;
    let mut tx = conn.begin().await?;
    if inserts.is_empty() {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    let t = db_now_ms!(q, &mut *tx);
    let mut queued: Vec<Queued> = inserts
        .iter()
        .map(|_| Queued {
            id: uuid::Uuid::now_v7().simple().to_string(),
            duplicate: false,
        })
        .collect();
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
        statuses.push(match &a.record {
            AttemptRecord::Recipients(o) => {
                recipients_in(
                    Conn::from(&mut *tx),
                    t,
                    &a.id,
                    o,
                    a.retry_at_ms,
                    a.give_up,
                    a.transport,
                )
                .await?
            }
            AttemptRecord::Whole(reason) => {
                whole_in(
                    Conn::from(&mut *tx),
                    t,
                    &a.id,
                    reason,
                    a.retry_at_ms,
                    a.give_up,
                    a.transport,
                )
                .await?
            }
        });
    }

    let new: Vec<(&Insert<'_>, &str)> = inserts
        .iter()
        .zip(&queued)
        .filter(|(_, q)| !q.duplicate)
        .map(|(insert, q)| (insert, q.id.as_str()))
        .collect();
    if !new.is_empty() {
        let mut m = PgMessages::default();
        for (insert, id) in &new {
            let msg = insert.message;
            let (subject, message_id) = header_fields(&msg.body[..msg.body.len().min(HEADER_SCAN)]);
            let claimed = insert.lease_until.is_some();
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
            m.status
                .push(if claimed { "sending" } else { "queued" }.to_string());
            m.attempts.push(i64::from(claimed));
            m.last_attempt_at.push(claimed.then_some(t));
            m.lease_until.push(insert.lease_until);
            m.lease_id.push(insert.lease_id);
            m.idempotency_key.push(msg.idempotency_key.clone());
            for (pos, r) in msg.recipients.iter().enumerate() {
                m.r_message.push(id.to_string());
                m.r_position.push(pos as i64);
                m.r_address.push(r.clone());
            }
        }
        sqlx::query(
            "INSERT INTO messages (id, connection_id, connection_name, source, submitter, mail_from, \
             subject, message_id, size, body, status, attempts, queued_at, last_attempt_at, \
             next_attempt_at, lease_until, idempotency_key, lease_id) \
             SELECT id, cid, cname, src, sub, mfrom, subj, mid, size, body, st, att, $12, lat, $12, lu, ik, li \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::bigint[], $10::bytea[], $11::text[], $13::bigint[], \
             $14::bigint[], $15::bigint[], $16::text[], $17::bigint[]) \
             AS v(id, cid, cname, src, sub, mfrom, subj, mid, size, body, st, att, lat, lu, ik, li)",
        )
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
        .bind(&m.status)
        .bind(t)
        .bind(&m.attempts)
        .bind(&m.last_attempt_at)
        .bind(&m.lease_until)
        .bind(&m.idempotency_key)
        .bind(&m.lease_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO recipients (message_id, position, address, status) \
             SELECT mid, pos, addr, 'pending' FROM UNNEST($1::text[], $2::bigint[], $3::text[]) \
             AS v(mid, pos, addr)",
        )
        .bind(&m.r_message)
        .bind(&m.r_position)
        .bind(&m.r_address)
        .execute(&mut *tx)
        .await?;
        // Delivered at commit, once per transaction however many messages it holds.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NEW_MAIL_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    if !sent.is_empty() {
        let (mut ids, mut details, mut transports) = (Vec::new(), Vec::new(), Vec::new());
        let (mut r_ids, mut r_pos, mut r_reply) = (Vec::new(), Vec::new(), Vec::new());
        for (a, replies) in &sent {
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
        sqlx::query(
            "UPDATE recipients SET status = 'sent', reply = v.reply, updated_at = $4 \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS v(mid, pos, reply) \
             WHERE recipients.message_id = v.mid AND recipients.position = v.pos",
        )
        .bind(&r_ids)
        .bind(&r_pos)
        .bind(&r_reply)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE messages SET status = 'sent', lease_until = NULL, next_attempt_at = $2, \
             done_at = $2, last_error = NULL, body = NULL WHERE id = ANY($1::text[])",
        )
        .bind(&ids)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO attempts (message_id, at, outcome, detail, transport) \
             SELECT mid, $3, 'sent', detail, tr FROM UNNEST($1::text[], $2::text[], $4::text[]) AS v(mid, detail, tr)",
        )
        .bind(&ids)
        .bind(&details)
        .bind(t)
        .bind(&transports)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Written { queued, statuses })
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
    status: Vec<String>,
    attempts: Vec<i64>,
    last_attempt_at: Vec<Option<i64>>,
    lease_until: Vec<Option<i64>>,
    lease_id: Vec<Option<i64>>,
    idempotency_key: Vec<Option<String>>,
    r_message: Vec<String>,
    r_position: Vec<i64>,
    r_address: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::messages::test_message;

    fn message(to: &[&str], key: Option<&str>) -> NewMessage {
        NewMessage {
            idempotency_key: key.map(str::to_string),
            ..test_message(to)
        }
    }

    async fn status(store: &Store, id: &str) -> (String, Vec<(String, String)>) {
        let d = store.message_detail(id).await.unwrap().unwrap();
        let rcpts = d
            .recipient_results
            .into_iter()
            .map(|r| (r.address, r.status))
            .collect();
        (d.summary.status, rcpts)
    }

    #[tokio::test]
    async fn one_cycle_inserts_claims_dedups_and_records_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let mut conn = store.writer_connection().await.unwrap();

        // Cycle 1: a claimed message, a queued one, and the same idempotency key twice.
        let (a, b) = (
            message(&["x@e.org", "y@e.org"], None),
            message(&["z@e.org"], None),
        );
        let (k1, k2) = (
            message(&["k@e.org"], Some("key")),
            message(&["k@e.org"], Some("key")),
        );
        let inserts = [
            Insert {
                message: &a,
                lease_until: Some(now_ms() + 60_000),
                lease_id: Some(42),
            },
            Insert {
                message: &b,
                lease_until: None,
                lease_id: None,
            },
            Insert {
                message: &k1,
                lease_until: None,
                lease_id: None,
            },
            Insert {
                message: &k2,
                lease_until: None,
                lease_id: None,
            },
        ];
        let w = write_batch(&mut conn, &inserts, &[]).await.unwrap();
        assert_eq!(w.queued.len(), 4);
        assert!(!w.queued[2].duplicate);
        assert!(
            w.queued[3].duplicate,
            "the second use of a key in one batch is a duplicate"
        );
        assert_eq!(w.queued[3].id, w.queued[2].id);
        let (ida, idb) = (w.queued[0].id.clone(), w.queued[1].id.clone());
        assert_eq!(status(&store, &ida).await.0, "sending", "claimed at insert");
        assert_eq!(
            status(&store, &idb).await,
            ("queued".into(), vec![("z@e.org".into(), "pending".into())])
        );
        let claimed = store.claim_ready(1, 10, 60_000).await.unwrap();
        assert_eq!(claimed.len(), 2, "the claimed message is not claimed again");
        assert!(claimed.iter().all(|m| m.id != ida));

        // Cycle 2: a new message with a bulk record (all sent) and a one-by-one record (one
        // recipient deferred).
        let c = message(&["c@e.org"], None);
        let records = [
            Attempt {
                id: ida.clone(),
                lease_id: 42,
                record: AttemptRecord::Recipients(vec![
                    (0, RecipientOutcome::Sent("250 ok 1".into())),
                    (1, RecipientOutcome::Sent("250 ok 2".into())),
                ]),
                retry_at_ms: now_ms(),
                give_up: false,
                transport: Some("graph"),
            },
            Attempt {
                id: idb.clone(),
                lease_id: claimed.iter().find(|m| m.id == idb).unwrap().lease_id,
                record: AttemptRecord::Recipients(vec![(
                    0,
                    RecipientOutcome::Deferred("451 later".into()),
                )]),
                retry_at_ms: now_ms() + 60_000,
                give_up: false,
                transport: Some("smtp"),
            },
        ];
        let w = write_batch(
            &mut conn,
            &[Insert {
                message: &c,
                lease_until: None,
                lease_id: None,
            }],
            &records,
        )
        .await
        .unwrap();
        assert_eq!(w.queued.len(), 1);
        assert_eq!(w.statuses, [MessageStatus::Sent, MessageStatus::Deferred]);
        assert_eq!(
            status(&store, &ida).await,
            (
                "sent".into(),
                vec![
                    ("x@e.org".into(), "sent".into()),
                    ("y@e.org".into(), "sent".into())
                ]
            )
        );
        let detail = store.message_detail(&ida).await.unwrap().unwrap();
        assert_eq!(detail.attempt_log.len(), 1);
        assert_eq!(
            detail.attempt_log[0].detail.as_deref(),
            Some("sent: 250 ok 1\nsent: 250 ok 2")
        );
        // Each attempt says which transport carried it, whichever statement wrote it.
        assert_eq!(detail.attempt_log[0].transport.as_deref(), Some("graph"));
        assert_eq!(status(&store, &idb).await.0, "deferred");
        let deferred = store.message_detail(&idb).await.unwrap().unwrap();
        assert_eq!(deferred.attempt_log[0].transport.as_deref(), Some("smtp"));
        assert_eq!(status(&store, &w.queued[0].id).await.0, "queued");
    }

    async fn count(store: &Store, table: &str) -> i64 {
        on!(store.db(), |pool, q| {
            sqlx::query_scalar(q.sql_owned(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(pool)
                .await
                .unwrap()
        })
    }

    /// Statements are padded to a few sizes; the padding never becomes rows.
    #[tokio::test]
    async fn padded_statements_write_exactly_the_rows_given() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let mut conn = store.writer_connection().await.unwrap();
        // 205 messages: a full statement of 200 and one of 5 padded to 8; 3 recipients each.
        let many: Vec<NewMessage> = (0..205)
            .map(|_| message(&["a@e.org", "b@e.org", "c@e.org"], None))
            .collect();
        let inserts: Vec<Insert<'_>> = many
            .iter()
            .map(|message| Insert {
                message,
                lease_until: Some(now_ms() + 60_000),
                lease_id: Some(42),
            })
            .collect();
        let w = write_batch(&mut conn, &inserts, &[]).await.unwrap();
        assert_eq!(count(&store, "messages").await, 205);
        assert_eq!(count(&store, "recipients").await, 615);
        // Three of them sent (padded to 4 messages and 16 recipient rows).
        let records: Vec<Attempt> = w.queued[..3]
            .iter()
            .map(|q| Attempt {
                id: q.id.clone(),
                lease_id: 42,
                record: AttemptRecord::Recipients(
                    (0..3)
                        .map(|p| (p, RecipientOutcome::Sent(format!("250 ok {p}"))))
                        .collect(),
                ),
                retry_at_ms: now_ms(),
                give_up: false,
                transport: Some("smtp"),
            })
            .collect();
        let w2 = write_batch(&mut conn, &[], &records).await.unwrap();
        assert_eq!(w2.statuses, [MessageStatus::Sent; 3]);
        assert_eq!(count(&store, "attempts").await, 3);
        let sent: i64 = on!(store.db(), |pool, q| {
            sqlx::query_scalar(q.sql("SELECT COUNT(*) FROM recipients WHERE status = 'sent'"))
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert_eq!(sent, 9);
        assert_eq!(status(&store, &w.queued[3].id).await.0, "sending");
    }

    #[tokio::test]
    async fn a_failed_cycle_leaves_nothing_behind_and_the_next_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let mut conn = store.writer_connection().await.unwrap();
        let good = message(&["a@e.org"], None);
        let record_of_unknown = Attempt {
            id: "no-such-message".into(),
            lease_id: 1,
            record: AttemptRecord::Whole("421 gone".into()),
            retry_at_ms: now_ms(),
            give_up: false,
            transport: Some("smtp"),
        };
        // The attempt log refers to a message that does not exist (foreign key): the cycle fails.
        let failed = write_batch(
            &mut conn,
            &[Insert {
                message: &good,
                lease_until: None,
                lease_id: None,
            }],
            std::slice::from_ref(&record_of_unknown),
        )
        .await;
        assert!(failed.is_err());
        let listed = store.claim_ready(1, 10, 60_000).await.unwrap();
        assert!(listed.is_empty(), "a failed cycle inserted nothing");
        let w = write_batch(
            &mut conn,
            &[Insert {
                message: &good,
                lease_until: None,
                lease_id: None,
            }],
            &[],
        )
        .await
        .unwrap();
        assert_eq!(status(&store, &w.queued[0].id).await.0, "queued");
    }
}

#[cfg(test)]
mod durability_tests {
    use super::*;
    use crate::store::messages::test_message;

    /// SQLite's `synchronous` of the writer connection; on PostgreSQL 2 while the session's
    /// `synchronous_commit` is `on` (a records-only cycle lowers it for its own transaction
    /// only, with `SET LOCAL`), else 1.
    async fn synchronous(conn: &mut WriterConnection) -> i64 {
        match conn {
            On::Sqlite(conn) => sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
            On::Postgres(conn) => {
                let v: String = sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                if v == "on" { 2 } else { 1 }
            }
        }
    }

    /// FULL (2) whenever new mail is in the cycle; NORMAL (1) for delivery records alone.
    #[tokio::test]
    async fn new_mail_waits_for_the_disk_and_records_alone_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let mut conn = store.writer_connection().await.unwrap();
        let m = test_message(&["b@example.org"]);
        let insert = Insert {
            message: &m,
            lease_until: Some(now_ms() + 60_000),
            lease_id: Some(42),
        };
        let w = write_batch(&mut conn, &[insert], &[]).await.unwrap();
        assert_eq!(synchronous(&mut conn).await, 2);
        let sent = Attempt {
            id: w.queued[0].id.clone(),
            lease_id: 42,
            record: AttemptRecord::Recipients(vec![(0, RecipientOutcome::Sent("250 ok".into()))]),
            retry_at_ms: now_ms(),
            give_up: false,
            transport: Some("smtp"),
        };
        write_batch(&mut conn, &[], &[sent]).await.unwrap();
        let records_alone = if store.backend().is_postgres() { 2 } else { 1 };
        assert_eq!(synchronous(&mut conn).await, records_alone);
        write_batch(&mut conn, &[insert], &[]).await.unwrap();
        assert_eq!(synchronous(&mut conn).await, 2);
    }
}
