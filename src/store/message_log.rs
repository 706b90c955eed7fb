//! Reading the sent-mail log: filtered lists, one message's detail, its raw body.

use super::messages::{
    AttemptDetail, MessageDetail, MessageFilter, MessageSummary, RecipientDetail, rfc3339_ms,
};
use super::{Store, StoreError};

/// A message's row in the log, as [`SUMMARY_COLUMNS`] reads it.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: String,
    connection_name: String,
    source: String,
    submitter: Option<String>,
    mail_from: String,
    subject: Option<String>,
    message_id: Option<String>,
    size: i64,
    status: String,
    held_by: Option<String>,
    attempts: i64,
    queued_at: i64,
    last_attempt_at: Option<i64>,
    next_attempt_at: Option<i64>,
    done_at: Option<i64>,
    last_error: Option<String>,
}

fn summary(row: SummaryRow, recipients: Vec<String>) -> Result<MessageSummary, StoreError> {
    let status = row.status;
    Ok(MessageSummary {
        id: row.id,
        connection: row.connection_name,
        source: row.source,
        submitter: row.submitter,
        from: row.mail_from,
        recipients,
        subject: row.subject,
        message_id: row.message_id,
        size: row.size,
        next_attempt_at: if matches!(status.as_str(), "queued" | "deferred") {
            row.next_attempt_at.map(rfc3339_ms)
        } else {
            None
        },
        status,
        held_by: row.held_by,
        attempts: row.attempts,
        queued_at: rfc3339_ms(row.queued_at),
        last_attempt_at: row.last_attempt_at.map(rfc3339_ms),
        done_at: row.done_at.map(rfc3339_ms),
        last_error: row.last_error,
    })
}

const SUMMARY_COLUMNS: &str = "m.id, m.connection_name, m.source, m.submitter, m.mail_from, m.subject, m.message_id, \
    m.size, m.status, m.held_by, m.attempts, m.queued_at, m.last_attempt_at, m.next_attempt_at, m.done_at, m.last_error";

impl Store {
    pub async fn list_messages(
        &self,
        f: &MessageFilter,
    ) -> Result<Vec<MessageSummary>, StoreError> {
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM messages m WHERE 1 = 1");
        if f.status.is_some() {
            sql.push_str(" AND m.status = ?");
        }
        if f.connection.is_some() {
            sql.push_str(" AND m.connection_name = ?");
        }
        if f.since.is_some() {
            sql.push_str(" AND m.queued_at >= ?");
        }
        if f.recipient.is_some() {
            sql.push_str(" AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.address = ?)");
        }
        if f.submitter.is_some() {
            sql.push_str(" AND m.submitter = ?");
        }
        if let Some(ids) = &f.connection_ids {
            // Ids are integers from the store itself, never caller text: written inline.
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            if list.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                sql.push_str(&format!(" AND m.connection_id IN ({})", list.join(",")));
            }
        }
        if f.before_id.is_some() {
            sql.push_str(" AND m.id < ?");
        }
        sql.push_str(" ORDER BY m.id DESC LIMIT CAST(? AS INTEGER)");
        let rows = on!(self.db(), |pool, bk| {
            let mut q = sqlx::query_as::<_, SummaryRow>(bk.sql_owned(sql));
            if let Some(s) = f.status {
                q = q.bind(s.as_str());
            }
            if let Some(c) = &f.connection {
                q = q.bind(c.clone());
            }
            if let Some(s) = f.since {
                q = q.bind(s);
            }
            if let Some(r) = &f.recipient {
                q = q.bind(r.clone());
            }
            if let Some(s) = &f.submitter {
                q = q.bind(s.clone());
            }
            if let Some(b) = &f.before_id {
                q = q.bind(b.clone());
            }
            q = q.bind(i64::from(f.limit.unwrap_or(100).clamp(1, 1000)));
            q.fetch_all(pool).await?
        });
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let addresses = self.recipient_addresses(&row.id).await?;
            out.push(summary(row, addresses)?);
        }
        Ok(out)
    }

    async fn recipient_addresses(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_scalar(
                q.sql("SELECT address FROM recipients WHERE message_id = ? ORDER BY position"),
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn message_detail(&self, id: &str) -> Result<Option<MessageDetail>, StoreError> {
        let row = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, SummaryRow>(q.sql_owned(format!(
                "SELECT {SUMMARY_COLUMNS} FROM messages m WHERE m.id = ?"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        let Some(row) = row else { return Ok(None) };
        let rows = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, (String, String, Option<String>)>(
            q.sql("SELECT address, status, reply FROM recipients WHERE message_id = ? ORDER BY position"),
        )
        .bind(id)
        .fetch_all(pool)
        .await?
        });
        let recipient_results: Vec<RecipientDetail> = rows
            .into_iter()
            .map(|(address, status, reply)| RecipientDetail {
                address,
                status,
                reply,
            })
            .collect();
        let attempt_log = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, (i64, String, Option<String>, Option<String>)>(q.sql(
                "SELECT at, outcome, detail, transport FROM attempts WHERE message_id = ? ORDER BY id",
            ))
            .bind(id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(at, outcome, detail, transport)| AttemptDetail {
                at: rfc3339_ms(at),
                outcome,
                detail,
                transport,
            })
            .collect::<Vec<_>>()
        });
        let addresses = recipient_results
            .iter()
            .map(|r| r.address.clone())
            .collect();
        Ok(Some(MessageDetail {
            summary: summary(row, addresses)?,
            recipient_results,
            attempt_log,
        }))
    }

    /// Whether the message's content is still stored (without reading it).
    pub async fn message_body_stored(&self, id: &str) -> Result<bool, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_scalar::<_, bool>(
                q.sql("SELECT EXISTS (SELECT 1 FROM message_bodies WHERE id = ?)"),
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            .unwrap_or(false)
        }))
    }

    /// The raw message (None once it was sent and its body dropped).
    pub async fn message_body(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_scalar::<_, Option<Vec<u8>>>(
                q.sql("SELECT body FROM message_bodies WHERE id = ?"),
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            .flatten()
        }))
    }
}

impl Store {
    /// (connection, status, count) over the whole store, for `/metrics` and the dashboard.
    pub async fn message_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, (String, String, i64)>(q.sql("SELECT connection_name, status, COUNT(*) AS n FROM messages GROUP BY connection_name, status ORDER BY 1, 2"))
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}
