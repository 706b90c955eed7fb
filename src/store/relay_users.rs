//! Relay users: the name and password a legacy app uses to submit to the relay, bound to one
//! connection. Generated passwords (256 random bits) are checked with one HMAC (microseconds);
//! admin-chosen ones, which may be weak, with argon2id.
//!
//! Mail tokens are never encrypted with a relay password: a wrong password must not be able to
//! damage tokens, and an app-only connection must not accept any password.

use std::net::IpAddr;

use super::PortableRow as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::access::random_token;
use super::{Store, StoreError, now};
use crate::domain::{DisplayName, FromPolicy};
use crate::smtp::server::IpNetwork;

const HMAC_KEY: &str = "relay_password_hmac";

/// A relay user, without any secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayUser {
    pub name: String,
    pub connection: String,
    #[serde(skip)]
    pub connection_id: i64,
    /// Extra allowed senders (addresses or `@domain`); the connection's mailbox is always allowed.
    pub allow_from: Vec<String>,
    /// `generated`, `chosen`, or `none` for a user bound to networks.
    pub password: &'static str,
    /// Networks (CIDR) whose clients are this user without AUTH (devices); empty for most.
    pub networks: Vec<String>,
    /// What the relay does with a sender this user may not use: `refuse`, `rewrite` or
    /// `allow-listed`.
    pub from_policy: FromPolicy,
    /// The display name of a rewritten `From:`; `None` keeps the original one.
    pub display_name: Option<DisplayName>,
    pub created_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayUserError {
    #[error(
        "relay user name `{0}` may hold letters, digits, `.`, `-`, `_` and `@`, 1 to 64 characters"
    )]
    BadName(String),
    #[error("a relay user named `{0}` already exists")]
    Duplicate(String),
    #[error("there is no relay user named `{0}` (see `postern relay-user list`)")]
    NoSuchUser(String),
    #[error("a chosen password must be at least 12 characters")]
    WeakPassword,
    #[error(
        "a generated password is {MIN_GENERATED} to {MAX_GENERATED} characters long, not {0}: \
         devices that cap passwords usually take 16 to 32"
    )]
    BadLength(usize),
    #[error("{0}")]
    BadNetwork(#[from] crate::smtp::server::IpNetworkError),
    #[error(
        "network {network} overlaps {other} of relay user `{user}`: a client address may belong \
         to one relay user only; choose another network, or remove `{user}` first \
         (`postern relay-user remove {user}`)"
    )]
    NetworkOverlap {
        network: String,
        other: String,
        user: String,
    },
    #[error(
        "relay user `{0}` is bound to networks and logs in by its address, without a password; \
         to give it one, remove it and add it again without `--network`"
    )]
    BoundToNetworks(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shortest generated password: 16 letters and digits still carry 95 bits.
pub const MIN_GENERATED: usize = 16;
pub const MAX_GENERATED: usize = 128;

/// What a generated password looks like. The default, 43 characters of base64url (256 bits),
/// suits software; devices that cap passwords or choke on symbols want a length or letters and
/// digits only. Generated passwords are checked with one keyed hash whatever their shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PasswordShape {
    /// Characters; `None`: 43 (256 bits of base64url).
    pub length: Option<usize>,
    /// Letters and digits only (no `-` or `_`).
    pub alphanumeric: bool,
}

impl PasswordShape {
    /// Never starting with `-`: pasted into a command line (`swaks --auth-password …`,
    /// `curl -u`), such a password reads as an option (one in 64 did).
    fn generate(self) -> Result<SecretString, RelayUserError> {
        loop {
            let p = self.draw()?;
            if !p.expose_secret().starts_with('-') {
                return Ok(p);
            }
        }
    }

    fn draw(self) -> Result<SecretString, RelayUserError> {
        const BASE64URL: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        if self.length.is_none() && !self.alphanumeric {
            return Ok(SecretString::from(random_token()));
        }
        let length = self.length.unwrap_or(43);
        if !(MIN_GENERATED..=MAX_GENERATED).contains(&length) {
            return Err(RelayUserError::BadLength(length));
        }
        let alphabet = if self.alphanumeric {
            &BASE64URL[..62]
        } else {
            BASE64URL
        };
        let mut rng = rand::rngs::OsRng;
        let password: String = (0..length)
            .map(|_| char::from(alphabet[rand::Rng::gen_range(&mut rng, 0..alphabet.len())]))
            .collect();
        Ok(SecretString::from(password))
    }
}

/// The password of a new relay user, or a relay user's new password.
#[derive(Debug, Clone, Copy)]
pub enum NewPassword<'a> {
    /// Generated (shown once), checked with one keyed hash.
    Generated(PasswordShape),
    /// Chosen by the admin (at least 12 characters), stored with argon2id.
    Chosen(&'a SecretString),
}

impl NewPassword<'_> {
    /// A generated password of the default shape.
    pub const GENERATED: NewPassword<'static> = NewPassword::Generated(PasswordShape {
        length: None,
        alphanumeric: false,
    });
}

impl From<sqlx::Error> for RelayUserError {
    fn from(e: sqlx::Error) -> Self {
        RelayUserError::Store(StoreError::Db(e))
    }
}

impl RelayUserError {
    pub fn is_usage(&self) -> bool {
        !matches!(self, RelayUserError::Store(_))
    }
}

fn check_name(name: &str) -> Result<(), RelayUserError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RelayUserError::BadName(name.to_string()))
    }
}

fn decode(row: &impl super::PortableRow) -> Result<RelayUser, sqlx::Error> {
    let allow: String = row.try_get("allow_from")?;
    let kind: String = row.try_get("hash_kind")?;
    let networks: String = row.try_get("networks")?;
    let networks: Vec<String> = networks.split_whitespace().map(str::to_string).collect();
    Ok(RelayUser {
        name: row.try_get("name")?,
        connection: row.try_get("connection_name")?,
        connection_id: row.try_get("connection_id")?,
        allow_from: allow.split_whitespace().map(str::to_string).collect(),
        password: match (kind.as_str(), networks.is_empty()) {
            (_, false) => "none",
            ("hmac", true) => "generated",
            _ => "chosen",
        },
        networks,
        from_policy: decode_from_policy(row)?,
        display_name: decode_display_name(row)?,
        created_at: chrono::DateTime::from_timestamp(row.try_get("created_at")?, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    })
}

const SELECT: &str = "SELECT u.name, u.connection_id, c.name AS connection_name, u.allow_from, u.hash_kind, u.hash, \
    u.networks, u.from_policy, u.display_name, u.created_at \
    FROM relay_users u JOIN connections c ON c.id = u.connection_id";

impl Store {
    async fn relay_hmac(&self, password: &SecretString) -> Result<String, StoreError> {
        let key = self.server_secret(HMAC_KEY).await?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
        mac.update(password.expose_secret().as_bytes());
        Ok(mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    async fn password_hash(
        &self,
        password: NewPassword<'_>,
    ) -> Result<(&'static str, String, Option<SecretString>), RelayUserError> {
        match password {
            NewPassword::Generated(shape) => {
                let generated = shape.generate()?;
                Ok(("hmac", self.relay_hmac(&generated).await?, Some(generated)))
            }
            NewPassword::Chosen(p) if p.expose_secret().chars().count() < 12 => {
                Err(RelayUserError::WeakPassword)
            }
            NewPassword::Chosen(p) => {
                let hash = self
                    .password_checks()
                    .hash(p)
                    .await
                    .map_err(StoreError::from)?;
                Ok(("argon2", hash, None))
            }
        }
    }

    /// Creates a relay user; returns the generated password when none was chosen (shown once).
    pub async fn create_relay_user(
        &self,
        name: &str,
        connection_id: i64,
        allow_from: &[String],
        password: NewPassword<'_>,
    ) -> Result<(RelayUser, Option<SecretString>), RelayUserError> {
        check_name(name)?;
        let (kind, hash, generated) = self.password_hash(password).await?;
        let t = now();
        let res = on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("INSERT INTO relay_users (name, connection_id, allow_from, hash_kind, hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
        )
        .bind(name)
        .bind(connection_id)
        .bind(allow_from.join(" "))
        .bind(kind)
        .bind(hash)
        .bind(t)
        .bind(t)
        .execute(pool)
        .await.map(|r| r.rows_affected())
        });
        match res {
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(RelayUserError::Duplicate(name.into()));
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        Ok((self.relay_user(name).await?, generated))
    }

    pub async fn relay_user(&self, name: &str) -> Result<RelayUser, RelayUserError> {
        let row = on!(self.db(), |pool, q| {
            sqlx::query(q.sql_owned(format!("{SELECT} WHERE u.name = ?")))
                .bind(name)
                .fetch_optional(pool)
                .await?
                .map(super::AnyRow::from)
        });
        row.as_ref()
            .map(decode)
            .transpose()?
            .ok_or_else(|| RelayUserError::NoSuchUser(name.into()))
    }

    pub async fn list_relay_users(&self) -> Result<Vec<RelayUser>, RelayUserError> {
        let rows = on!(self.db(), |pool, q| {
            sqlx::query(q.sql_owned(format!("{SELECT} ORDER BY u.name")))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(super::AnyRow::from)
                .collect::<Vec<_>>()
        });
        Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
    }

    pub async fn remove_relay_user(&self, name: &str) -> Result<(), RelayUserError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(q.sql("DELETE FROM relay_users WHERE name = ?"))
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if n == 0 {
            return Err(RelayUserError::NoSuchUser(name.into()));
        }
        Ok(())
    }

    /// Replaces the password; returns the new generated one when none was chosen.
    pub async fn reset_relay_password(
        &self,
        name: &str,
        password: NewPassword<'_>,
    ) -> Result<Option<SecretString>, RelayUserError> {
        if !self.relay_user(name).await?.networks.is_empty() {
            return Err(RelayUserError::BoundToNetworks(name.into()));
        }
        let (kind, hash, generated) = self.password_hash(password).await?;
        self.write_password(name, kind, &hash, None).await?;
        Ok(generated)
    }

    /// Stores a user's password hash and, when given, its networks.
    async fn write_password(
        &self,
        name: &str,
        kind: &str,
        hash: &str,
        networks: Option<String>,
    ) -> Result<(), RelayUserError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "UPDATE relay_users SET hash_kind = ?, hash = ?, networks = COALESCE(?, networks), \
             updated_at = ? WHERE name = ?",
            ))
            .bind(kind)
            .bind(hash)
            .bind(networks)
            .bind(now())
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(RelayUserError::NoSuchUser(name.into()));
        }
        Ok(())
    }

    /// Refuses `networks` for relay user `name` when one overlaps another of the list, or a
    /// network of another relay user: a client address must name one user only.
    pub async fn check_relay_networks(
        &self,
        name: &str,
        networks: &[IpNetwork],
    ) -> Result<(), RelayUserError> {
        for (i, net) in networks.iter().enumerate() {
            if let Some(other) = networks[..i].iter().find(|o| o.overlaps(net)) {
                return Err(RelayUserError::NetworkOverlap {
                    network: net.to_string(),
                    other: other.to_string(),
                    user: name.to_string(),
                });
            }
        }
        for user in self.list_relay_users().await? {
            if user.name == name {
                continue;
            }
            for theirs in &user.networks {
                // Stored networks were checked when stored; one that no longer parses
                // cannot match anything, so it cannot overlap either.
                let Ok(theirs) = IpNetwork::parse(theirs) else {
                    continue;
                };
                if let Some(net) = networks.iter().find(|n| n.overlaps(&theirs)) {
                    return Err(RelayUserError::NetworkOverlap {
                        network: net.to_string(),
                        other: theirs.to_string(),
                        user: user.name,
                    });
                }
            }
        }
        Ok(())
    }

    /// Binds relay user `name` to `networks` (a device: its clients are this user without
    /// AUTH), or unbinds it (empty). Its password is replaced by a keyed hash of a random one
    /// nobody is shown, so a bound user has no usable password.
    pub async fn set_relay_networks(
        &self,
        name: &str,
        networks: &[IpNetwork],
    ) -> Result<RelayUser, RelayUserError> {
        self.check_relay_networks(name, networks).await?;
        let (kind, hash, _unseen) = self.password_hash(NewPassword::GENERATED).await?;
        let joined: Vec<String> = networks.iter().map(ToString::to_string).collect();
        self.write_password(name, kind, &hash, Some(joined.join(" ")))
            .await?;
        self.relay_user(name).await
    }

    /// The user if `password` is theirs. Unknown users cost the same HMAC, so timing does not
    /// tell which names exist (argon2 users are slower by design; the relay caches them).
    /// `client`: the address the attempt came from; argon2 checks are bounded per address and
    /// in total, and [`StoreError::Busy`] means "try again in a moment".
    pub async fn verify_relay_user(
        &self,
        name: &str,
        password: &SecretString,
        client: Option<IpAddr>,
    ) -> Result<Option<RelayUser>, StoreError> {
        let row = on!(self.db(), |pool, q| {
            sqlx::query(q.sql_owned(format!("{SELECT} WHERE u.name = ?")))
                .bind(name)
                .fetch_optional(pool)
                .await?
                .map(super::AnyRow::from)
        });
        let candidate = self.relay_hmac(password).await?;
        let Some(row) = row else { return Ok(None) };
        let kind: String = row.try_get("hash_kind")?;
        let stored: String = row.try_get("hash")?;
        let ok = match kind.as_str() {
            "hmac" => constant_time_eq(candidate.as_bytes(), stored.as_bytes()),
            _ => {
                self.password_checks()
                    .verify(client, &stored, password)
                    .await?
            }
        };
        if !ok {
            return Ok(None);
        }
        Ok(Some(decode(&row)?))
    }
}

fn decode_from_policy(row: &impl super::PortableRow) -> Result<FromPolicy, sqlx::Error> {
    let text: String = row.try_get("from_policy")?;
    text.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn decode_display_name(row: &impl super::PortableRow) -> Result<Option<DisplayName>, sqlx::Error> {
    let text: Option<String> = row.try_get("display_name")?;
    text.map(|t| DisplayName::parse(&t))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    /// Sets what the relay does with a sender the user may not use, and the display name of a
    /// rewritten `From:` (`None`: keep the message's own). Both are parsed types already, so a
    /// bad value never reaches the database.
    pub async fn set_relay_from_policy(
        &self,
        name: &str,
        policy: FromPolicy,
        display_name: Option<&DisplayName>,
    ) -> Result<RelayUser, RelayUserError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("UPDATE relay_users SET from_policy = ?, display_name = ?, updated_at = ? WHERE name = ?"),
        )
        .bind(policy.as_str())
        .bind(display_name.map(DisplayName::as_str))
        .bind(now())
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected()
        });
        if n == 0 {
            return Err(RelayUserError::NoSuchUser(name.into()));
        }
        self.relay_user(name).await
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "relay_users_tests.rs"]
mod tests;
