//! Notifications: what the notifier last saw (one event per state change), the events to send,
//! and every delivery attempt. A state change and its event are written in one transaction, so
//! a restart neither repeats an event nor loses one.

use super::PortableRow as _;

use std::collections::HashMap;

use super::{Store, StoreError, now};

/// An event to tell the admin about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notification {
    pub id: i64,
    /// `connection.needs_reauthorization`, `connection.recovered`, `secret.expiring`...
    pub event: String,
    pub connection: Option<String>,
    /// What happened (the provider's words where there are some).
    pub reason: String,
    /// What to do, from the catalogue of provider errors.
    pub fix: String,
    /// Unix seconds.
    pub at: i64,
    /// Every channel delivered or gave up.
    pub done: bool,
}

/// One attempt to deliver a notification through one channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryAttempt {
    pub channel: String,
    pub ok: bool,
    /// The channel's answer (HTTP status, command exit, SMTP outcome), never a secret.
    pub detail: String,
    pub at: i64,
}

/// The event to record with a state change.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub event: String,
    pub connection: Option<String>,
    pub reason: String,
    pub fix: String,
}

fn decode(r: &impl super::PortableRow) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: r.try_get("id")?,
        event: r.try_get("event")?,
        connection: r.try_get("connection")?,
        reason: r.try_get("reason")?,
        fix: r.try_get("fix")?,
        at: r.try_get("created_at")?,
        done: r.try_get::<Option<i64>>("done_at")?.is_some(),
    })
}

/// What the notifier watches in the message log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailWatch {
    /// When the oldest message not yet delivered (queued, deferred, held, sending) was accepted, unix ms.
    pub oldest_waiting_ms: Option<i64>,
    /// How many messages have failed, ever (grows by one per failure).
    pub failed: i64,
    /// The latest failure: (message id, connection, error).
    pub last_failure: Option<(String, String, Option<String>)>,
}

impl Store {
    pub async fn mail_watch(&self) -> Result<MailWatch, StoreError> {
        let oldest: Option<i64> = on!(self.db(), |pool, q| {
            sqlx::query_scalar(
            q.sql("SELECT MIN(queued_at) FROM messages WHERE status IN ('queued', 'deferred', 'held', 'sending')"),
        )
        .fetch_one(pool)
        .await?
        });
        let failed: i64 = on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.sql("SELECT COUNT(*) FROM messages WHERE status = 'failed'"))
                .fetch_one(pool)
                .await?
        });
        let last = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "SELECT id, connection_name, last_error FROM messages WHERE status = 'failed' \
             ORDER BY done_at DESC LIMIT 1",
            ))
            .fetch_optional(pool)
            .await?
            .map(super::AnyRow::from)
        });
        let last_failure = last
            .map(|r| -> Result<_, StoreError> {
                Ok((
                    r.try_get("id")?,
                    r.try_get("connection_name")?,
                    r.try_get("last_error")?,
                ))
            })
            .transpose()?;
        Ok(MailWatch {
            oldest_waiting_ms: oldest,
            failed,
            last_failure,
        })
    }

    /// `PRAGMA quick_check`: `ok`, or the first problems found. On PostgreSQL the server keeps
    /// its own pages (checksums, WAL): `ok` once it answers.
    pub async fn quick_check(&self) -> Result<String, StoreError> {
        let rows: Vec<String> = on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.pick("PRAGMA quick_check(5)", "SELECT 'ok'"))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.join("; "))
    }

    /// Per connection: its held messages, and those failed in the last 24 hours (connections
    /// with neither are absent). One pass over held and failed mail for all connections: no
    /// index serves "a connection's mail by status" (it would be rewritten at every status
    /// change of every message, see migration 0020).
    pub async fn held_and_failed(&self) -> Result<HashMap<i64, (i64, i64)>, StoreError> {
        let since_ms = (now() - 86_400) * 1000;
        let rows = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, (i64, i64, i64)>(q.sql(
                "SELECT connection_id, \
                 CAST(COALESCE(SUM(CASE WHEN status = 'held' THEN 1 ELSE 0 END), 0) AS BIGINT) AS held, \
                 CAST(COALESCE(SUM(CASE WHEN status = 'failed' AND done_at >= ? THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed \
                 FROM messages WHERE status IN ('held', 'failed') GROUP BY connection_id",
            ))
            .bind(since_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter(|(_, held, failed)| *held + *failed > 0)
            .map(|(id, held, failed)| (id, (held, failed)))
            .collect())
    }

    /// Every state the notifier has recorded: (subject, topic) → state.
    pub async fn notification_states(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), String>, StoreError> {
        let rows = on!(self.db(), |pool, q| {
            sqlx::query(q.sql("SELECT subject, topic, state FROM notification_state"))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(super::AnyRow::from)
                .collect::<Vec<_>>()
        });
        rows.iter()
            .map(|r| {
                Ok((
                    (r.try_get("subject")?, r.try_get("topic")?),
                    r.try_get("state")?,
                ))
            })
            .collect()
    }

    /// Moves (subject, topic) from `prev` to `state` and records the event it causes, atomically.
    /// Compare-and-set: if another process moved it first, nothing is written and the answer is
    /// false, so two notifiers on one store still send one event per change.
    pub async fn record_transition(
        &self,
        subject: &str,
        topic: &str,
        prev: Option<&str>,
        state: &str,
        event: Option<&NewNotification>,
    ) -> Result<bool, StoreError> {
        let t = now();
        on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            let moved = match prev {
            None => sqlx::query(
                q.sql("INSERT INTO notification_state (subject, topic, state, updated_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (subject, topic) DO NOTHING"),
            )
            .bind(subject)
            .bind(topic)
            .bind(state)
            .bind(t),
            Some(p) => sqlx::query(
                q.sql("UPDATE notification_state SET state = ?, updated_at = ? \
                 WHERE subject = ? AND topic = ? AND state = ?"),
            )
            .bind(state)
            .bind(t)
            .bind(subject)
            .bind(topic)
            .bind(p),
        }
        .execute(&mut *tx)
        .await?
        .rows_affected();
            if moved == 0 {
                return Ok(false);
            }
            if let Some(e) = event {
                sqlx::query(
                q.sql("INSERT INTO notifications (event, connection, reason, fix, created_at) VALUES (?, ?, ?, ?, ?)"),
            )
            .bind(&e.event)
            .bind(&e.connection)
            .bind(&e.reason)
            .bind(&e.fix)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            }
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Events not yet delivered through every channel, oldest first.
    pub async fn pending_notifications(&self, limit: i64) -> Result<Vec<Notification>, StoreError> {
        let rows =
            on!(self.db(), |pool, q| {
                sqlx::query(q.sql(
                "SELECT id, event, connection, reason, fix, created_at, done_at FROM notifications \
             WHERE done_at IS NULL ORDER BY id LIMIT CAST(? AS INTEGER)",
            ))
            .bind(limit)
            .fetch_all(pool)
            .await?.into_iter().map(super::AnyRow::from).collect::<Vec<_>>()
            });
        rows.iter().map(decode).collect()
    }

    /// The most recent events, newest first.
    pub async fn recent_notifications(&self, limit: i64) -> Result<Vec<Notification>, StoreError> {
        let rows =
            on!(self.db(), |pool, q| {
                sqlx::query(q.sql(
                "SELECT id, event, connection, reason, fix, created_at, done_at FROM notifications \
             ORDER BY id DESC LIMIT CAST(? AS INTEGER)",
            ))
            .bind(limit)
            .fetch_all(pool)
            .await?.into_iter().map(super::AnyRow::from).collect::<Vec<_>>()
            });
        rows.iter().map(decode).collect()
    }

    pub async fn notification_attempts(&self, id: i64) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let rows = on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("SELECT channel, ok, detail, at FROM notification_attempts WHERE notification_id = ? ORDER BY id"),
        )
        .bind(id)
        .fetch_all(pool)
        .await?.into_iter().map(super::AnyRow::from).collect::<Vec<_>>()
        });
        rows.iter()
            .map(|r| {
                Ok(DeliveryAttempt {
                    channel: r.try_get("channel")?,
                    ok: r.flag("ok")?,
                    detail: r.try_get("detail")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    pub async fn record_notification_attempt(
        &self,
        id: i64,
        channel: &str,
        ok: bool,
        detail: &str,
    ) -> Result<(), StoreError> {
        on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("INSERT INTO notification_attempts (notification_id, channel, ok, detail, at) VALUES (?, ?, ?, ?, ?)"),
        )
        .bind(id)
        .bind(channel)
        .bind(i64::from(ok))
        .bind(detail)
        .bind(now())
        .execute(pool)
        .await?;
        });
        Ok(())
    }

    pub async fn finish_notification(&self, id: i64) -> Result<(), StoreError> {
        on!(self.db(), |pool, q| {
            sqlx::query(q.sql("UPDATE notifications SET done_at = ? WHERE id = ?"))
                .bind(now())
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::messages::{RecipientOutcome, now_ms, test_message};

    #[tokio::test]
    async fn held_and_recently_failed_mail_is_counted_per_connection() {
        let (_dir, store, c) = crate::store::test_store_with_connection().await;
        let mut m = test_message(&["b@example.org"]);
        m.connection_id = c;
        let ids = store
            .insert_messages(&[m.clone(), m.clone(), m])
            .await
            .unwrap();
        assert!(store.held_and_failed().await.unwrap().is_empty());
        store.hold_message(&ids[0].id).await.unwrap();
        let claimed = store.claim_ready(c, 1, 60_000).await.unwrap();
        let refused = [(0, RecipientOutcome::Failed("550 5.1.1 no such user".into()))];
        store
            .record_attempt(&claimed[0].lease(), &refused, now_ms(), true, Some("smtp"))
            .await
            .unwrap();
        // One held, one failed; the third, queued, counts for neither.
        assert_eq!(
            store.held_and_failed().await.unwrap(),
            HashMap::from([(c, (1, 1))])
        );
    }

    #[tokio::test]
    async fn a_transition_and_its_event_are_kept_together_and_attempts_are_logged() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let e = NewNotification {
            event: "connection.needs_reauthorization".into(),
            connection: Some("contoso".into()),
            reason: "invalid_grant".into(),
            fix: "authorize".into(),
        };
        store
            .record_transition("contoso", "status", None, "needs-reauthorization", Some(&e))
            .await
            .unwrap();
        // A second notifier that saw the same old state records nothing.
        let again = store
            .record_transition("contoso", "status", None, "needs-reauthorization", Some(&e))
            .await
            .unwrap();
        assert!(!again);
        let states = store.notification_states().await.unwrap();
        assert_eq!(
            states
                .get(&("contoso".into(), "status".into()))
                .map(String::as_str),
            Some("needs-reauthorization")
        );
        let pending = store.pending_notifications(10).await.unwrap();
        assert_eq!(pending.len(), 1);
        store
            .record_notification_attempt(pending[0].id, "webhook", false, "HTTP 500")
            .await
            .unwrap();
        store.finish_notification(pending[0].id).await.unwrap();
        assert!(store.pending_notifications(10).await.unwrap().is_empty());
        let recent = store.recent_notifications(10).await.unwrap();
        assert!(recent[0].done);
        let attempts = store.notification_attempts(recent[0].id).await.unwrap();
        assert_eq!(attempts[0].detail, "HTTP 500");
        assert!(!attempts[0].ok);
    }
}
