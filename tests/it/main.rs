//! Integration tests: the real `postern` binary and library against real sockets on 127.0.0.1.

mod cli_connection;
mod cli_send;
mod doctor;
mod helpers;
mod http_api;
mod http_helpers;
mod http_ui;
mod monitoring;
mod notify;
mod oauth;
mod outbox;
mod relay;
