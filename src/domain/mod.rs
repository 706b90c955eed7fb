//! Newtypes that parse at the edge: nothing raw gets past the CLI, HTTP, SMTP or config.

mod connection;
pub mod connection_file;
mod connection_input;
mod csv;
mod email;
mod from_policy;
mod host;
mod limits;
mod name;
mod provider;
mod redirect;
pub mod scope;
mod tenant;
mod tls_mode;
mod transport;
mod view;

pub use connection::{Connection, ConnectionSettings, ConnectionStatus, Expiry, parse_expiry_date};
pub use connection_input::{ConnectionInput, FieldError, ValidationErrors};
pub use email::{EmailAddress, EmailError};
pub use from_policy::{
    DisplayName, DisplayNameError, FromPolicy, FromPolicyError, MAX_DISPLAY_NAME,
};
pub use host::{Host, HostError, Port, PortError};
pub use limits::{LIMIT_NAMES, LimitOverrides, Limits};
pub use name::{ConnectionName, NameError};
pub use provider::{FlowError, OAuthFlow, Preset, Provider, ProviderError};
pub use redirect::{RedirectUri, RedirectUriError};
pub use scope::{ScopeError, ScopeList, ScopeNotice, has_gmail_scope};
pub use tenant::{ClientId, ClientIdError, Tenant, TenantError, is_guid};
pub use tls_mode::{TlsMode, TlsModeError};
pub use transport::{
    DEFAULT_GRAPH_URL, Fallback, GraphLarge, Transport, TransportError, parse_graph_url,
};
pub use view::ConnectionView;
