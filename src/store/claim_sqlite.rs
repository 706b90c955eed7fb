//! A claim on SQLite: the outbox writer runs every claim of a cycle in one transaction (see
//! `outbox::queue::claim_all`), which the first claim's command opens and the last one's commits.
//!
//! One round trip to sqlx's SQLite thread (a wake-up of that thread and one of ours) carrying two
//! statements: the `UPDATE … RETURNING` brings each message with its body and its waiting
//! recipients, and the connection's next due time follows. It was five (with its own `BEGIN`, a
//! recipients query and `COMMIT`), then two, then with `BEGIN` and `COMMIT` in the same command
//! one; with a slow provider or a thousand connections each claim takes a message or two (and
//! with a backlog a cycle has one claim), so its round trips were much of its cost.

use std::sync::LazyLock;

use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow as _, Row as _, SqliteConnection};

use super::{Claim, ClaimLimit, ClaimRow, NEXT_DUE, drained, in_claim_order, new_lease_id, now_ms};
use crate::store::StoreError;

/// A claimed row with its waiting recipients, as `[[position, address], …]`.
#[derive(sqlx::FromRow)]
struct RowWithRecipients {
    #[sqlx(flatten)]
    row: ClaimRow,
    recipients: String,
}

/// The claim and the due time after it, as one command (see [`claim_in`]).
///
/// The first `messages` due rows in claim order (read from the `messages_due` index, with each
/// row's `size` but not its body), cut where their running size passes `bytes`. `LIMIT CAST(? AS
/// INTEGER)`, never a bare `LIMIT ?`: SQLite's planner reads a bare LIMIT parameter's value, so
/// every new binding expires the statement and it is compiled again on each claim
/// (SQLITE_STMTSTATUS_REPREPARE counts one per run); a cast it cannot see through keeps the one
/// compiled plan.
///
/// Then, in the same transaction (so no other claim comes between: exact, unlike inferring it
/// from a short claim), the earliest due time left rather than "any due now?": the same index
/// entry answers both, and a sender that finds the store drained needs the time anyway.
static CLAIM: LazyLock<[String; 4]> = LazyLock::new(|| {
    let claim = format!(
        "UPDATE messages SET lease_id = ?, status = 'sending', lease_until = ?, attempts = attempts + 1, \
         last_attempt_at = ? WHERE id IN (SELECT id FROM ( \
             SELECT id, ROW_NUMBER() OVER w AS n, SUM(size) OVER w AS total FROM ( \
                 SELECT id, size, next_attempt_at FROM messages WHERE connection_id = ? \
                 AND status IN ('queued', 'deferred') AND next_attempt_at <= ? \
                 ORDER BY next_attempt_at, id LIMIT CAST(? AS INTEGER)) \
             WINDOW w AS (ORDER BY next_attempt_at, id ROWS UNBOUNDED PRECEDING)) \
         WHERE total <= ? OR n <= ?) \
         RETURNING id, connection_id, mail_from, \
         (SELECT b.body FROM message_bodies b WHERE b.id = messages.id) AS body, attempts, queued_at, next_attempt_at, \
         (SELECT json_group_array(json_array(r.position, r.address)) FROM recipients r \
              WHERE r.message_id = messages.id AND r.status IN ('pending', 'deferred')) AS recipients; \
         {NEXT_DUE};"
    );
    // Indexed by `Frame::index`. A delivery claim does not wait for the disk: lost to a power cut,
    // it only sends those messages again.
    [
        claim.clone(),
        format!("PRAGMA synchronous = NORMAL; BEGIN; {claim}"),
        format!("{claim} COMMIT;"),
        format!("PRAGMA synchronous = NORMAL; BEGIN; {claim} COMMIT;"),
    ]
});

/// Whether a claim's command also opens the transaction, commits it, or both: one round trip
/// instead of three for a cycle's only claim.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Frame {
    pub opens: bool,
    pub commits: bool,
}

impl Frame {
    /// The claim at `i` of `n` in one transaction.
    pub(crate) fn nth(i: usize, n: usize) -> Self {
        Self {
            opens: i == 0,
            commits: i + 1 == n,
        }
    }

    fn index(self) -> usize {
        usize::from(self.opens) + 2 * usize::from(self.commits)
    }
}

/// Leases the oldest due mail of `connection_id` within `limit` on `c`, in the transaction that
/// `frame` opens or that is already open, and commits it if `frame` says so. On an error the
/// transaction may be left open: the caller rolls it back. (A committed row that then cannot be
/// read back is left to its lease, like the claim of a sender that died.)
pub(crate) async fn claim_in(
    c: &mut SqliteConnection,
    connection_id: i64,
    limit: ClaimLimit,
    lease_ms: i64,
    frame: Frame,
) -> Result<Claim, StoreError> {
    let t = now_ms();
    let lease_id = new_lease_id();
    // `MIN` always answers one row (`PRAGMA`, `BEGIN` and `COMMIT` none): the last row is the due time.
    let query = sqlx::query(sqlx::AssertSqlSafe(CLAIM[frame.index()].as_str()));
    let mut rows: Vec<SqliteRow> = bind_claim!(query, lease_id, t, lease_ms, connection_id, limit)
        .bind(connection_id)
        .fetch_all(&mut *c)
        .await?;
    let next_due: Option<i64> = match rows.pop() {
        Some(row) => row.try_get(0)?,
        None => return Err(StoreError::Corrupt("a claim without its due time".into())),
    };
    let rows = rows
        .iter()
        .map(RowWithRecipients::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let mut messages = Vec::with_capacity(rows.len());
    for RowWithRecipients { row, recipients } in rows {
        let mut recipients: Vec<(i64, String)> = serde_json::from_str(&recipients)
            .map_err(|e| StoreError::Corrupt(format!("recipients of a claimed message: {e}")))?;
        recipients.sort_unstable_by_key(|(position, _)| *position);
        messages.push(row.into_claimed(lease_id, recipients));
    }
    Ok(Claim {
        messages: in_claim_order(messages),
        drained: drained(next_due, t),
        next_due,
    })
}
