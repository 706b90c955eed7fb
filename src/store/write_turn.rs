//! Writers inside this process take turns at SQLite's one write lock instead of sleeping for it.
//!
//! SQLite lets one connection write at a time. A connection that finds the write lock taken
//! retries from SQLite's busy handler, which sleeps 1, 2, 5, 10, … up to 100 ms between tries,
//! holding its pool connection all the while. With the outbox writer committing back to back (a
//! thousand connections starting at once, a backlog being drained), a token save on the pool
//! slept that way hundreds of times: `perf trace` counted 436 sleeps and 2.05 s asleep on two of
//! the pool's four connections during the fan-out benchmark's 2.4 s. Writes of this process now
//! wait here, in arrival order and without polling, and meet SQLite's lock only when another
//! process (the CLI) holds it.
//!
//! The rule for a writer: take the turn before its pool connection or transaction, keep it only
//! for its statements, and never wait for the outbox (which takes turns too) while holding it.
//! PostgreSQL locks rows, not the database: no turn is taken there.

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use super::{Db, Store};

/// The turn shared by every clone of a SQLite [`Store`].
#[derive(Debug, Clone, Default)]
pub(super) struct WriteTurn(Arc<Mutex<()>>);

/// Held while this process writes to SQLite; dropping it passes the turn on.
#[derive(Debug)]
pub struct Turn<'a>(#[allow(dead_code)] Option<MutexGuard<'a, ()>>);

impl Store {
    /// Waits for this process's turn to write (at once on PostgreSQL).
    pub async fn write_turn(&self) -> Turn<'_> {
        match &self.db {
            Db::Sqlite { turn, .. } => Turn(Some(turn.0.lock().await)),
            Db::Postgres { .. } => Turn(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::{ExposeSecret as _, SecretString};

    use super::*;
    use crate::store::SecretKind;

    #[tokio::test]
    async fn a_token_saved_while_another_writer_has_its_turn_waits_then_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        // SQLite whatever the test environment says: PostgreSQL takes no turn.
        let store = Store::open(dir.path(), None).await.unwrap();
        let id = crate::store::insert_test_connection(&store).await;

        let outbox_cycle = store.write_turn().await;
        let other = store.clone();
        let save = tokio::spawn(async move {
            let token = SecretString::from("access token".to_string());
            other
                .save_tokens(id, None, SecretKind::AccessToken, &token, 4_102_444_800)
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !save.is_finished(),
            "the token was written during another writer's turn"
        );
        assert!(
            store
                .secret(id, SecretKind::AccessToken)
                .await
                .unwrap()
                .is_none()
        );

        drop(outbox_cycle);
        tokio::time::timeout(Duration::from_secs(10), save)
            .await
            .expect("the save still waits after the turn was given back")
            .unwrap()
            .unwrap();
        let stored = store
            .secret(id, SecretKind::AccessToken)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.value.expose_secret(), "access token");
        assert_eq!(
            store.connection_by_id(id).await.unwrap().status.as_str(),
            "authorized"
        );
    }
}
