//! Newtypes that parse at the edge: nothing raw gets past the CLI, HTTP, SMTP or config.

mod tls_mode;

pub use tls_mode::{TlsMode, TlsModeError};
