//! Integration tests: the real `postern` binary and library against real sockets on 127.0.0.1.

mod cli_connection;
mod cli_connection_import;
mod cli_connection_list;
mod cli_package;
mod cli_send;
mod cluster;
mod doctor;
mod google;
mod helpers;
mod http_api;
mod http_api_list;
mod http_api_scope;
mod http_helpers;
mod http_ui;
mod http_ui_scale;
mod monitoring;
mod notify;
mod oauth;
mod outbox;
mod relay;
mod scale;
mod seed;
mod store_copy;
