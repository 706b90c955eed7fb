//! One outbox writer cycle in one transaction: the messages coming in and the attempts being
//! recorded, so one fsync covers both (group commit).
//!
//! The common case (new messages, attempts where every recipient was accepted) is written with a
//! few multi-row statements sent as one or two commands: each statement sent separately costs a
//! trip to SQLite's thread and back, which was most of the relay's CPU time. The statements are
//! padded to a few sizes so that they stay prepared.

use std::collections::HashMap;

use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments as _, PgConnection, SqliteConnection};

use super::attempts::{Attempt, AttemptRecord, lost_claims_opening, recipients_in, whole_in};
use super::messages::{MessageStatus, NewMessage, Queued, RecipientOutcome, header_fields, now_ms};
use super::{Conn, On, Store, StoreError};

mod postgres;

pub use postgres::new_mail_connections;
#[cfg(test)]
use postgres::new_mail_payload;

/// The outbox writer's own connection, on the active backend.
pub type WriterConnection = On<SqliteConnection, PgConnection>;

/// The channel of new-mail notifications between instances sharing a PostgreSQL store.
pub const NEW_MAIL_CHANNEL: &str = "postern_new_mail";

// PER_RUN_PLAN: the PostgreSQL statements that find rows of `messages` or `recipients` by an
// array of ids are planned for each run (`persistent(false)`), never from a plan cached at
// start: the first runs meet an empty outbox, where scanning the whole table is the cheapest
// plan, and a plan cached then stays (until an ANALYZE) while the log grows to thousands of
// rows. Measured on a fresh database: 1.3–2 ms per statement, scanning 8,000 rows to change 8;
// planned per run, 0.05–0.2 ms. Only these: forcing custom plans on the whole session also
// re-plans every foreign-key check of every inserted row (measured: 26 µs each).

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
                    // Statement journals in memory: the writer's multi-row statements inside a
                    // transaction each keep one (the pages they change, to undo the statement
                    // alone); past 64 KiB SQLite spills it to a temporary file, which cost two
                    // system calls per page in the backlog benchmark. Its size is bounded by the
                    // batch (`MAX_BATCH_BYTES`); this connection's sorts are of one claim's rows.
                    .pragma("temp_store", "MEMORY")
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
        On::Postgres(conn) => postgres::write_batch(conn, inserts, records).await,
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
    if keyed || one_by_one {
        sqlx::query(sqlx::AssertSqlSafe(begin.clone()))
            .execute(&mut *conn)
            .await?;
        begun = true;
    }
    // Records of claims taken over by another worker change nothing: their status is the
    // message's of the moment. The check opens the transaction if nothing did yet.
    let claims: Vec<_> = records.iter().map(Attempt::lease).collect();
    let lost = if records.is_empty() {
        Vec::new()
    } else {
        let opening = if begun { "" } else { begin.as_str() };
        begun = true;
        lost_claims_opening(Conn::from(&mut *conn), opening, &claims).await?
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
            *status = Some(record_one(Conn::from(&mut *conn), t, a).await?);
        }
    }

    // The rest in at most two commands (new mail; records), the first opening the transaction
    // and the last committing it. Two, not one: each has a few shapes that stay prepared,
    // where their combinations would not.
    let new = fresh(inserts, &queued);
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

/// The inserts that are not duplicates of an earlier message, each with its new id.
fn fresh<'i, 'm>(
    inserts: &'i [Insert<'m>],
    queued: &'i [Queued],
) -> Vec<(&'i Insert<'m>, &'i str)> {
    inserts
        .iter()
        .zip(queued)
        .filter(|(_, q)| !q.duplicate)
        .map(|(insert, q)| (insert, q.id.as_str()))
        .collect()
}

/// One record that is not "every recipient accepted" (a recipient refused or deferred, the
/// whole attempt failed), with the statements both backends share.
async fn record_one(conn: Conn<'_>, t: i64, a: &Attempt) -> Result<MessageStatus, StoreError> {
    match &a.record {
        AttemptRecord::Recipients(o) => {
            recipients_in(conn, t, &a.id, o, a.retry_at_ms, a.give_up, a.transport).await
        }
        AttemptRecord::Whole(reason) => {
            whole_in(
                conn,
                t,
                &a.id,
                reason,
                a.retry_at_ms,
                a.give_up,
                a.transport,
            )
            .await
        }
    }
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

const MESSAGE_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const MESSAGE_COLUMNS: usize = 17;

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
             subject, message_id, size, status, attempts, queued_at, last_attempt_at, \
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
        // The bodies after their messages (their rows reference them).
        sql.push_str("INSERT INTO message_bodies (id, body) SELECT * FROM (VALUES ");
        repeat_rows(sql, rows, "(?, ?)");
        sql.push_str(") WHERE column1 IS NOT NULL;\n");
        for (insert, id) in chunk {
            add(args, *id)?;
            add(args, insert.message.body.as_slice())?;
        }
        add_nulls(args, (rows - chunk.len()) * 2)?;
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
             done_at = ?, last_error = NULL WHERE id IN (",
        );
        repeat_rows(sql, messages, "?");
        sql.push_str(");\nDELETE FROM message_bodies WHERE id IN (");
        repeat_rows(sql, messages, "?");
        sql.push_str(");\n");
        add(args, t)?;
        add(args, t)?;
        for _ in 0..2 {
            for (a, _) in chunk {
                add(args, a.id.as_str())?;
            }
            add_nulls(args, messages - chunk.len())?;
        }

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

    /// SQLite: the writer keeps statement journals in memory (2 = MEMORY), where a write batch
    /// of tens of pages would otherwise spill each to a temporary file; other connections keep
    /// SQLite's default (0), so a big query elsewhere can still sort on disk.
    #[tokio::test]
    async fn the_writer_keeps_its_statement_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let (On::Sqlite(mut writer), On::Sqlite(pool)) =
            (store.writer_connection().await.unwrap(), store.db())
        else {
            return; // PostgreSQL has no such setting.
        };
        let temp_store = "PRAGMA temp_store";
        let on_writer: i64 = sqlx::query_scalar(temp_store)
            .fetch_one(&mut writer)
            .await
            .unwrap();
        let on_pool: i64 = sqlx::query_scalar(temp_store)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!((on_writer, on_pool), (2, 0));
    }

    #[test]
    fn a_notification_names_each_connection_of_queued_mail_once() {
        let (a, b) = (
            NewMessage {
                connection_id: 7,
                ..test_message(&["x@e.org"])
            },
            NewMessage {
                connection_id: 3,
                ..test_message(&["x@e.org"])
            },
        );
        let queued = |m| Insert {
            message: m,
            lease_until: None,
            lease_id: None,
        };
        let claimed = Insert {
            lease_until: Some(1),
            lease_id: Some(1),
            ..queued(&b)
        };
        let new = [(queued(&a), "1"), (claimed, "2"), (queued(&a), "3")];
        let refs: Vec<(&Insert<'_>, &str)> = new.iter().map(|(i, id)| (i, *id)).collect();
        let payload = new_mail_payload(&refs).unwrap();
        assert_eq!(new_mail_connections(&payload), Some(vec![7]));
        assert_eq!(
            new_mail_payload(&refs[1..2]),
            None,
            "claimed mail alone: no notification"
        );
        // Too many to name: an empty payload, read as "look at the store".
        let many: Vec<NewMessage> = (0..2_000)
            .map(|c| NewMessage {
                connection_id: c,
                ..test_message(&["x@e.org"])
            })
            .collect();
        let inserts: Vec<Insert<'_>> = many.iter().map(queued).collect();
        let refs: Vec<(&Insert<'_>, &str)> = inserts.iter().map(|i| (i, "id")).collect();
        assert_eq!(new_mail_payload(&refs).as_deref(), Some(""));
        assert_eq!(new_mail_connections(""), None);
        assert_eq!(new_mail_connections("1,x"), None);
    }

    /// PostgreSQL: one notification per commit with queued mail, none for mail handed straight
    /// to a sender.
    #[tokio::test]
    async fn only_queued_new_mail_notifies_the_other_instances() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let Some(mut listener) = store.new_mail_listener().await.unwrap() else {
            eprintln!(
                "skipped: new-mail notifications are PostgreSQL's (on SQLite one process writes)"
            );
            return;
        };
        let mut conn = store.writer_connection().await.unwrap();
        let m = test_message(&["b@example.org"]);
        let claimed = Insert {
            message: &m,
            lease_until: Some(now_ms() + 60_000),
            lease_id: Some(42),
        };
        write_batch(&mut conn, &[claimed], &[]).await.unwrap();
        let queued = Insert {
            lease_until: None,
            lease_id: None,
            ..claimed
        };
        write_batch(&mut conn, &[queued, queued], &[])
            .await
            .unwrap();
        let wait = std::time::Duration::from_secs(5);
        let n = tokio::time::timeout(wait, listener.recv())
            .await
            .expect("a notification for the queued mail")
            .unwrap();
        assert_eq!(
            new_mail_connections(n.payload()),
            Some(vec![m.connection_id])
        );
        let more =
            tokio::time::timeout(std::time::Duration::from_millis(500), listener.recv()).await;
        assert!(more.is_err(), "one notification only: {more:?}");
    }
}
