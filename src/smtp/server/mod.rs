//! The relay listener: legacy apps submit mail here with AUTH PLAIN/LOGIN (RFC 6409).
//!
//! - [`Session`]: the SMTP state machine, no I/O (bytes in, [`Action`]s out).
//! - [`RelayServer`]: the async shell around it (TCP, STARTTLS/implicit TLS, timeouts,
//!   connection limit, graceful shutdown), calling a [`RelayBackend`] to check credentials
//!   and store messages.
//! - [`tls`]: the relay's certificate (from PEM files, or a self-signed one kept on disk).
//! - What a client can make the relay spend, bounded: session slots and stress mode (`load`),
//!   whole-line deadlines and the minimum data rate (`deadline`), and the memory that message
//!   bodies in flight share (`budget`); each with its refusal (`421 4.7.0`, `421 4.4.2`,
//!   `452 4.3.1`).

mod auth;
mod backend;
mod budget;
mod command;
mod config;
mod connection;
mod data;
mod deadline;
mod envelope;
mod fuzz;
mod fuzz_auth;
mod guard;
mod identity;
mod listener;
mod live;
mod load;
mod message;
mod network;
mod reply;
mod session;
mod stats;
pub mod tls;

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod listener_tests;
#[cfg(test)]
mod session_tests;

pub use backend::{BackendError, RelayBackend};
pub use config::{
    AuthThrottle, BareLfPolicy, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_RECIPIENTS, PeerInfo,
    SessionConfig,
};
pub use envelope::{BodyType, Envelope, ReversePath, StoreFailure};
pub use fuzz::fuzz_session;
pub use fuzz_auth::fuzz_auth_decoders;
pub use identity::{AllowedFrom, AllowedFromError, AuthOutcome, Identity, RewriteFrom};
pub use listener::{
    DEFAULT_MESSAGE_MEMORY_BUDGET, DEFAULT_MIN_DATA_RATE, ListenerConfig, RelayServer,
};
pub use live::{LiveCert, LiveConfig};
pub use network::{IpNetwork, IpNetworkError};
pub use reply::Reply;
pub use session::{Action, Session};
pub use stats::{RelayStats, StatsSnapshot};
