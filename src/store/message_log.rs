//! Reading the sent-mail log: filtered lists, one message's detail, its raw body.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::messages::{
    AttemptDetail, MessageDetail, MessageFilter, MessageSummary, RecipientDetail, rfc3339_ms,
};
use super::{Store, StoreError};

fn summary(row: &SqliteRow, recipients: Vec<String>) -> Result<MessageSummary, StoreError> {
    let ms = |c: &str| row.try_get::<Option<i64>, _>(c).map(|v| v.map(rfc3339_ms));
    let status: String = row.try_get("status")?;
    Ok(MessageSummary {
        id: row.try_get("id")?,
        connection: row.try_get("connection_name")?,
        source: row.try_get("source")?,
        submitter: row.try_get("submitter")?,
        from: row.try_get("mail_from")?,
        recipients,
        subject: row.try_get("subject")?,
        message_id: row.try_get("message_id")?,
        size: row.try_get("size")?,
        next_attempt_at: if matches!(status.as_str(), "queued" | "deferred") {
            ms("next_attempt_at")?
        } else {
            None
        },
        status,
        held_by: row.try_get("held_by")?,
        attempts: row.try_get("attempts")?,
        queued_at: rfc3339_ms(row.try_get("queued_at")?),
        last_attempt_at: ms("last_attempt_at")?,
        done_at: ms("done_at")?,
        last_error: row.try_get("last_error")?,
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
                sql.push_str(" AND 0");
            } else {
                sql.push_str(&format!(" AND m.connection_id IN ({})", list.join(",")));
            }
        }
        if f.before_id.is_some() {
            sql.push_str(" AND m.id < ?");
        }
        sql.push_str(" ORDER BY m.id DESC LIMIT ?");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
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
        let rows = q.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            out.push(summary(row, self.recipient_addresses(&id).await?)?);
        }
        Ok(out)
    }

    async fn recipient_addresses(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT address FROM recipients WHERE message_id = ? ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn message_detail(&self, id: &str) -> Result<Option<MessageDetail>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM messages m WHERE m.id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let rows = sqlx::query(
            "SELECT address, status, reply FROM recipients WHERE message_id = ? ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let recipient_results = rows
            .iter()
            .map(|r| {
                Ok(RecipientDetail {
                    address: r.try_get("address")?,
                    status: r.try_get("status")?,
                    reply: r.try_get("reply")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let attempt_log = sqlx::query(
            "SELECT at, outcome, detail FROM attempts WHERE message_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(AttemptDetail {
                at: rfc3339_ms(r.try_get("at")?),
                outcome: r.try_get("outcome")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let addresses = recipient_results
            .iter()
            .map(|r| r.address.clone())
            .collect();
        Ok(Some(MessageDetail {
            summary: summary(&row, addresses)?,
            recipient_results,
            attempt_log,
        }))
    }

    /// Whether the message's content is still stored (without reading it).
    pub async fn message_body_stored(&self, id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar::<_, bool>("SELECT body IS NOT NULL FROM messages WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(false),
        )
    }

    /// The raw message (None once it was sent and its body dropped).
    pub async fn message_body(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar::<_, Option<Vec<u8>>>("SELECT body FROM messages WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }
}

impl Store {
    /// (connection, status, count) over the whole store, for `/metrics` and the dashboard.
    pub async fn message_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT connection_name, status, COUNT(*) AS n FROM messages GROUP BY connection_name, status ORDER BY 1, 2")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("connection_name")?,
                    r.try_get("status")?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }
}
