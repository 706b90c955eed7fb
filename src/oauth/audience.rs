//! Which resource an access token is for. One Microsoft refresh token serves several resources
//! (Exchange Online's SMTP and Microsoft Graph); each keeps its own access token, so a refresh
//! for one never replaces the other's.

use crate::domain::{Connection, OAuthFlow, Transport};
use crate::store::SecretKind;

use super::TokenError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// What the connection's own scopes name (its transport's resource), stored as `access_token`.
    Own,
    /// Microsoft Graph, for an SMTP connection that falls back to Graph: obtained with the same
    /// refresh token and the cloud's Graph scope, stored as `access_token_graph`.
    Graph,
}

impl Audience {
    /// The audience actually kept for `conn`: Graph is a Graph connection's own.
    pub fn for_connection(self, conn: &Connection) -> Audience {
        match (self, conn.settings.transport) {
            (Audience::Graph, Transport::Graph) => Audience::Own,
            (a, _) => a,
        }
    }

    /// Where its access token is sealed.
    pub fn secret_kind(self) -> SecretKind {
        match self {
            Audience::Own => SecretKind::AccessToken,
            Audience::Graph => SecretKind::GraphAccessToken,
        }
    }

    /// The scope to ask for, when it is not the connection's own: the cloud's Graph scope,
    /// delegated or app-only as the connection's flow is.
    pub fn scope(self, conn: &Connection) -> Result<Option<&'static str>, TokenError> {
        match self.for_connection(conn) {
            Audience::Own => Ok(None),
            Audience::Graph => {
                let name = conn.name();
                let Some((delegated, app_only)) = conn.settings.provider.graph_scopes() else {
                    return Err(TokenError::NotUsable(format!(
                        "connection `{name}` is not a Microsoft connection: it has no Microsoft Graph to fall back to"
                    )));
                };
                match conn.settings.flow {
                    OAuthFlow::AuthorizationCode => Ok(Some(delegated)),
                    OAuthFlow::ClientCredentials => Ok(Some(app_only)),
                    OAuthFlow::ServiceAccount => Err(TokenError::NotUsable(format!(
                        "connection `{name}` uses a Google service account: it has no Microsoft Graph token"
                    ))),
                }
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Own => "own",
            Audience::Graph => "graph",
        }
    }
}
