//! What a key scoped to connections may reach. The rule, in one place for every endpoint:
//! admin keys reach everything; unscoped `send` keys keep their meaning (submit anywhere, read
//! their own messages); a scoped `send` key reaches exactly its connections and their messages.
//!
//! A connection outside the scope gets 403 naming the scope, whether or not it exists, so a
//! customer's key cannot probe for other customers' connection names. A message outside the
//! scope gets 404, as another key's message already does for a `send` key.

use super::ApiCaller;
use crate::http::error::ApiError;
use crate::store::{ApiRole, ScopedConnection};

impl ApiCaller {
    /// The connections this key is limited to; `None` when it is not scoped.
    pub fn scope(&self) -> Option<&[ScopedConnection]> {
        self.key.scope.as_deref()
    }

    /// Which connections the caller may read (list, show, status): `None` means all (admin
    /// keys). Unscoped `send` keys are refused as before: they were never given connection
    /// details.
    pub fn readable_connections(&self) -> Result<Option<&[ScopedConnection]>, ApiError> {
        match (self.key.role, self.scope()) {
            (ApiRole::Admin, _) => Ok(None),
            (ApiRole::Send, Some(scope)) => Ok(Some(scope)),
            (ApiRole::Send, None) => self.require_admin().map(|_| None),
        }
    }

    /// The ids of the scope, for store filters; `None` when not scoped.
    pub fn scope_ids(&self) -> Option<Vec<i64>> {
        self.scope().map(|s| s.iter().map(|c| c.id).collect())
    }

    /// Whether the caller may use connection `id` (send through it, see its messages).
    pub fn may_use(&self, id: i64) -> bool {
        self.scope().is_none_or(|s| s.iter().any(|c| c.id == id))
    }

    /// Ok when the connection called `name` is usable by the caller; 403 naming the scope
    /// otherwise. Decided on the name alone, before any lookup (see the module header).
    pub fn check_connection_name(&self, name: &str) -> Result<(), ApiError> {
        match self.scope() {
            Some(s) if !s.iter().any(|c| c.name == name) => Err(self.out_of_scope(name)),
            _ => Ok(()),
        }
    }

    /// 403: connection `name` is not in this key's scope.
    pub fn out_of_scope(&self, name: &str) -> ApiError {
        let scope = self.scope().unwrap_or_default();
        let allowed = if scope.is_empty() {
            "no connection (every connection it was scoped to has been removed)".to_string()
        } else {
            let names: Vec<String> = scope.iter().map(|c| format!("`{}`", c.name)).collect();
            format!("connections {}", names.join(", "))
        };
        ApiError::Forbidden(format!(
            "API key `{}` is scoped to {allowed}: it may not use connection `{name}`; \
             ask an admin for a key scoped to it",
            self.key.name
        ))
    }

    /// Ok when the caller may act on (retry, delete) a message of connection `connection_id`;
    /// unscoped `send` keys keep needing an admin key for that, scoped ones reach their own
    /// connections' messages, and a message outside the scope is "not found".
    pub fn check_message_action(
        &self,
        id: &str,
        connection_id: Option<i64>,
    ) -> Result<(), ApiError> {
        if self.scope().is_none() {
            return self.require_admin();
        }
        match connection_id {
            Some(c) if self.may_use(c) => Ok(()),
            _ => Err(ApiError::NotFound(format!("message `{id}` does not exist"))),
        }
    }
}
