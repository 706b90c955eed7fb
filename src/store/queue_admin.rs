//! The admin's view of the outbox (`postern queue ...`, like `mailq`/`postqueue`): list what
//! waits, make mail due now, delete it, hold and release it.
//!
//! Each change is one conditional statement, so it cannot race a delivery worker: a message a
//! worker has claimed (`sending`) is never changed under it.

use super::PortableRow as _;
use serde::Serialize;

use super::messages::{MessageStatus, now_ms, rfc3339_ms};
use super::{Store, StoreError};

/// One message waiting in the outbox (`queue list`). The JSON form is stable.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: String,
    pub connection: String,
    /// `queued`, `sending`, `deferred`, `held` or `failed`.
    pub status: String,
    /// For `held`: `admin` (`queue hold`) or `connection` (it cannot send now).
    pub held_by: Option<String>,
    pub from: String,
    /// Recipients not yet delivered.
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    pub size: i64,
    pub attempts: i64,
    pub queued_at: String,
    /// When a `queued` or `deferred` message is next tried.
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// Which messages `queue retry` makes due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryTarget {
    /// One message: queued, deferred or failed.
    One(String),
    /// Every deferred message; with `include_failed`, failed ones too.
    All { include_failed: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum QueueAdminError {
    #[error("there is no message `{0}` (see `postern queue list`)")]
    NotFound(String),
    /// The message is in a state the action does not apply to; the text says what to do.
    #[error("message `{id}` is {status}: {hint}")]
    WrongState {
        id: String,
        status: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for QueueAdminError {
    fn from(e: sqlx::Error) -> Self {
        QueueAdminError::Store(StoreError::Db(e))
    }
}

impl QueueAdminError {
    /// The admin named a message that does not exist (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, QueueAdminError::NotFound(_))
    }
}

/// What a failed admin action says, by the message's current state.
fn hint(action: Action, status: &str, held_by: Option<&str>) -> &'static str {
    match (action, status, held_by) {
        (_, "sending", _) => "a worker is delivering it right now; look again in a moment",
        (_, "sent", _) => "it was delivered; it stays in the sent-mail log (`postern messages`)",
        (Action::Retry, "held", Some("admin")) => {
            "it is held by an admin: `postern queue release ID` sends it"
        }
        (_, "held", Some("connection")) => {
            "it is held because its connection cannot send; fix the connection (`postern connection list`) and it is released by itself"
        }
        (Action::Hold, "failed", _) => {
            "delivery was given up; `postern queue retry ID` tries again"
        }
        (Action::Release, _, _) => "only messages held with `postern queue hold` can be released",
        _ => "nothing to do",
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Retry,
    Delete,
    Hold,
    Release,
}

const WAITING: &str = "('queued', 'sending', 'deferred', 'held')";

impl Store {
    /// Messages in the outbox, oldest first: every waiting one (queued, sending, deferred,
    /// held), or only those with `status` (e.g. `failed`).
    pub async fn queue_entries(
        &self,
        status: Option<MessageStatus>,
        connection: Option<&str>,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let rcpts = match self.backend() {
            super::Backend::Sqlite => {
                "(SELECT group_concat(address, char(10)) FROM (SELECT address FROM recipients r \
                 WHERE r.message_id = m.id AND r.status IN ('pending', 'deferred') ORDER BY position))"
            }
            super::Backend::Postgres => {
                "(SELECT string_agg(address, chr(10) ORDER BY position) FROM recipients r \
                 WHERE r.message_id = m.id AND r.status IN ('pending', 'deferred'))"
            }
        };
        let mut sql = format!(
            "SELECT m.id, m.connection_name, m.status, m.held_by, m.mail_from, m.subject, m.size, \
             m.attempts, m.queued_at, m.next_attempt_at, m.last_error, {rcpts} AS rcpts \
             FROM messages m WHERE "
        );
        match status {
            Some(_) => sql.push_str("m.status = ?"),
            None => sql.push_str(&format!("m.status IN {WAITING}")),
        }
        if connection.is_some() {
            sql.push_str(" AND m.connection_name = ?");
        }
        sql.push_str(" ORDER BY m.queued_at, m.id");
        let rows = on!(self.db(), |pool, bk| {
            let mut q = sqlx::query(bk.sql_owned(sql));
            if let Some(s) = status {
                q = q.bind(s.as_str());
            }
            if let Some(c) = connection {
                q = q.bind(c.to_string());
            }
            q.fetch_all(pool)
                .await?
                .into_iter()
                .map(super::AnyRow::from)
                .collect::<Vec<_>>()
        });
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                let due = matches!(status.as_str(), "queued" | "deferred");
                Ok(QueueEntry {
                    id: row.try_get("id")?,
                    connection: row.try_get("connection_name")?,
                    held_by: row.try_get("held_by")?,
                    from: row.try_get("mail_from")?,
                    recipients: row
                        .try_get::<Option<String>>("rcpts")?
                        .map(|s| s.split('\n').map(str::to_string).collect())
                        .unwrap_or_default(),
                    subject: row.try_get("subject")?,
                    size: row.try_get("size")?,
                    attempts: row.try_get("attempts")?,
                    queued_at: rfc3339_ms(row.try_get("queued_at")?),
                    next_attempt_at: due
                        .then(|| row.try_get::<i64>("next_attempt_at").map(rfc3339_ms))
                        .transpose()?,
                    last_error: row.try_get("last_error")?,
                    status,
                })
            })
            .collect()
    }

    /// Makes messages due now: deferred and failed ones go back to `queued` and their
    /// undelivered recipients to `pending`. Returns how many messages were changed.
    pub async fn retry_messages(&self, target: &RetryTarget) -> Result<u64, QueueAdminError> {
        let statuses = match target {
            RetryTarget::One(_)
            | RetryTarget::All {
                include_failed: true,
            } => "('queued', 'deferred', 'failed')",
            RetryTarget::All {
                include_failed: false,
            } => "('queued', 'deferred')",
        };
        // A sent message has no body left: nothing to send again.
        let kept = "EXISTS (SELECT 1 FROM message_bodies b WHERE b.id = messages.id)";
        let only = match target {
            RetryTarget::One(_) => " AND id = ?",
            RetryTarget::All { .. } => "",
        };
        let changed = on!(self.db(), |pool, bk| {
            let mut tx = pool.begin().await?;
            // The recipients first, while the messages still have their old status.
            let mut q = sqlx::query(bk.sql_owned(format!(
                "UPDATE recipients SET status = 'pending' WHERE status IN ('deferred', 'failed') \
             AND message_id IN (SELECT id FROM messages WHERE status IN {statuses} \
             AND status != 'queued' AND {kept}{only})"
            )));
            if let RetryTarget::One(id) = target {
                q = q.bind(id.clone());
            }
            q.execute(&mut *tx).await?;
            let mut q = sqlx::query(bk.sql_owned(format!(
            "UPDATE messages SET status = 'queued', next_attempt_at = ?, done_at = NULL, held_by = NULL \
             WHERE status IN {statuses} AND {kept}{only}"
        )))
        .bind(now_ms());
            if let RetryTarget::One(id) = target {
                q = q.bind(id.clone());
            }
            let changed = q.execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            changed
        });
        if let RetryTarget::One(id) = target
            && changed == 0
        {
            return Err(self.why_not(id, Action::Retry).await);
        }
        Ok(changed)
    }

    /// Deletes a message that no worker is delivering (and that was not delivered).
    pub async fn delete_queued_message(&self, id: &str) -> Result<(), QueueAdminError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("DELETE FROM messages WHERE id = ? AND status IN ('queued', 'deferred', 'held', 'failed')"),
        )
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        });
        if n == 0 {
            return Err(self.why_not(id, Action::Delete).await);
        }
        Ok(())
    }

    /// Holds a waiting message until `release_message` (a connection's hold becomes the admin's).
    pub async fn hold_message(&self, id: &str) -> Result<(), QueueAdminError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "UPDATE messages SET status = 'held', held_by = 'admin' \
             WHERE id = ? AND status IN ('queued', 'deferred', 'held')",
            ))
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(self.why_not(id, Action::Hold).await);
        }
        Ok(())
    }

    /// Releases a message held by an admin: it is due now.
    pub async fn release_message(&self, id: &str) -> Result<(), QueueAdminError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "UPDATE messages SET status = 'queued', held_by = NULL, next_attempt_at = ? \
             WHERE id = ? AND status = 'held' AND held_by = 'admin'",
            ))
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(self.why_not(id, Action::Release).await);
        }
        Ok(())
    }

    /// Explains why an action changed nothing, from the message's current state.
    async fn why_not(&self, id: &str, action: Action) -> QueueAdminError {
        let row = on!(self.db(), |pool, q| {
            sqlx::query(
                q.sql("SELECT status, held_by, NOT EXISTS (SELECT 1 FROM message_bodies b WHERE b.id = messages.id) AS gone FROM messages WHERE id = ?"),
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map(|r| r.map(super::AnyRow::from))
        });
        match row {
            Err(e) => e.into(),
            Ok(None) => QueueAdminError::NotFound(id.to_string()),
            Ok(Some(row)) => {
                let status: String = row.try_get("status").unwrap_or_default();
                let held_by: Option<String> = row.try_get("held_by").unwrap_or_default();
                let gone: bool = row.try_get("gone").unwrap_or_default();
                let hint = if gone && status != "sent" && matches!(action, Action::Retry) {
                    "its content is no longer stored, so it cannot be sent again"
                } else {
                    hint(action, &status, held_by.as_deref())
                };
                QueueAdminError::WrongState {
                    id: id.to_string(),
                    status: match held_by {
                        Some(by) if status == "held" => format!("held (by {by})"),
                        _ => status,
                    },
                    hint,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::messages::{NewMessage, RecipientOutcome, Source};

    async fn store_with(n: usize) -> (tempfile::TempDir, Store, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let batch: Vec<NewMessage> = (0..n)
            .map(|i| NewMessage {
                connection_id: 1,
                connection_name: "fake".into(),
                source: Source::Cli,
                submitter: None,
                mail_from: "a@example.org".into(),
                recipients: vec![format!("r{i}@example.org"), "x@example.org".into()],
                body: format!("Subject: m{i}\r\n\r\nhi\r\n").into_bytes(),
                idempotency_key: None,
            })
            .collect();
        let ids = store
            .insert_messages(&batch)
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.id)
            .collect();
        (dir, store, ids)
    }

    async fn status(store: &Store, id: &str) -> String {
        store
            .message_detail(id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .status
    }

    #[tokio::test]
    async fn retry_makes_deferred_and_failed_mail_due_with_pending_recipients() {
        let (_d, store, ids) = store_with(3).await;
        let claimed = store.claim_ready(1, 10, 60_000).await.unwrap();
        assert_eq!(claimed.len(), 3);
        let lease = |id: &str| claimed.iter().find(|m| m.id == id).unwrap().lease();
        let later = now_ms() + 3_600_000;
        let outcomes = [
            (0, RecipientOutcome::Sent("250 ok".into())),
            (1, RecipientOutcome::Deferred("451 later".into())),
        ];
        store
            .record_attempt(&lease(&ids[0]), &outcomes, later, false, Some("smtp"))
            .await
            .unwrap();
        store
            .defer_message(&lease(&ids[1]), "550 no", later, true, Some("smtp"))
            .await
            .unwrap();
        store
            .defer_message(&lease(&ids[2]), "451 later", later, false, Some("smtp"))
            .await
            .unwrap();
        assert_eq!(status(&store, &ids[0]).await, "deferred");
        assert_eq!(status(&store, &ids[1]).await, "failed");
        assert!(store.claim_ready(1, 10, 60_000).await.unwrap().is_empty());

        // --all without --failed: only the deferred ones.
        let all = RetryTarget::All {
            include_failed: false,
        };
        assert_eq!(store.retry_messages(&all).await.unwrap(), 2);
        assert_eq!(status(&store, &ids[1]).await, "failed");
        store
            .retry_messages(&RetryTarget::One(ids[1].clone()))
            .await
            .unwrap();
        let d = store.message_detail(&ids[1]).await.unwrap().unwrap();
        assert_eq!(d.summary.status, "queued");
        assert!(d.summary.done_at.is_none());
        assert!(d.recipient_results.iter().all(|r| r.status == "pending"));

        let mut claimed = store.claim_ready(1, 10, 60_000).await.unwrap();
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(claimed.len(), 3, "all three due now");
        let first = claimed.iter().find(|c| c.id == ids[0]).unwrap();
        assert_eq!(
            first.recipients,
            [(1, "x@example.org".to_string())],
            "the sent recipient is not sent again"
        );
    }

    #[tokio::test]
    async fn nothing_changes_under_a_worker_and_errors_say_why() {
        let (_d, store, ids) = store_with(2).await;
        store.claim_ready(1, 1, 60_000).await.unwrap();
        let sending = &ids[0];
        for e in [
            store.delete_queued_message(sending).await.unwrap_err(),
            store.hold_message(sending).await.unwrap_err(),
            store
                .retry_messages(&RetryTarget::One(sending.clone()))
                .await
                .unwrap_err(),
        ] {
            assert!(!e.is_usage());
            assert!(e.to_string().contains("is sending"), "{e}");
        }
        assert_eq!(status(&store, sending).await, "sending");
        let missing = store.delete_queued_message("nope").await.unwrap_err();
        assert!(missing.is_usage() && missing.to_string().contains("`nope`"));
    }

    #[tokio::test]
    async fn hold_and_release_by_admin_and_delete() {
        let (_d, store, ids) = store_with(2).await;
        store.hold_message(&ids[0]).await.unwrap();
        let waiting = store.queue_entries(None, None).await.unwrap();
        assert_eq!(waiting.len(), 2);
        assert_eq!(waiting[0].status, "held");
        assert_eq!(waiting[0].held_by.as_deref(), Some("admin"));
        assert_eq!(waiting[0].recipients, ["r0@example.org", "x@example.org"]);
        assert!(waiting[1].next_attempt_at.is_some());
        let claimed = store.claim_ready(1, 10, 60_000).await.unwrap();
        assert_eq!(claimed.len(), 1, "held mail is not claimed");
        // A connection coming back does not release the admin's hold.
        assert_eq!(store.release_connection_mail(1).await.unwrap(), 0);
        let e = store
            .retry_messages(&RetryTarget::One(ids[0].clone()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("queue release"), "{e}");
        store.release_message(&ids[0]).await.unwrap();
        assert_eq!(status(&store, &ids[0]).await, "queued");
        assert!(store.release_message(&ids[0]).await.is_err());
        store.delete_queued_message(&ids[0]).await.unwrap();
        assert!(store.message_detail(&ids[0]).await.unwrap().is_none());
        assert_eq!(store.queue_entries(None, None).await.unwrap().len(), 1);
    }
}
