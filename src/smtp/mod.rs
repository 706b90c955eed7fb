//! SMTP: the upstream client (delivery to the provider) and the relay server (legacy apps).

pub mod client;
pub mod sasl;
pub mod server;
