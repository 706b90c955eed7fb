//! Postern: SMTP OAuth 2.0 connections, consent, token keeping, and a relay for legacy apps.
//!
//! # Layout
//!
//! - [`app`]: start-up as a type: binds the listeners, starts the workers, serves until stopped.
//! - [`cli`]: the command line, one file per command group; thin over the library.
//! - [`reload`]: re-reading the settings in a running serve (SIGHUP, `postern reload`).
//! - [`retention`]: the background pruning of the sent-mail log (`retention.log_days`).
//! - [`declared`]: connections declared in postern.toml, kept in the store at start and reload.
//! - [`settings`]: the typed settings tree (defaults < file < `POSTERN_*` env < flags).
//! - [`telemetry`]: logging set-up.
//! - [`doctor`]: every health check of the installation (CLI `doctor`, the Health page).
//! - [`domain`]: newtypes that parse at the edge (names, addresses, tenants, scopes, the connection record).
//! - [`explain`]: the catalogue of provider errors (AADSTS, SMTP, OAuth, Graph) with cause and remedy.
//! - [`store`]: every query in one place (SQLite), and secret sealing (XChaCha20-Poly1305).
//! - [`oauth`]: consent flows and the token manager that keeps access tokens fresh.
//! - [`http`]: the JSON API, the admin web UI and the OAuth redirect endpoint, behind one router.
//! - [`smtp`]: the upstream client that delivers with XOAUTH2, and the relay server for legacy apps.
//! - [`graph`]: the Microsoft Graph transport: sendMail over HTTPS, envelope-wins MIME, reply classes.
//! - [`outbox`]: the durable queue (group commit), the relay intake, and the delivery workers.
//! - [`metrics`]: counters and histograms for `/metrics` (Prometheus text).
//! - [`notify`]: tells the admin about state changes (webhook, e-mail, command) before mail stops.
//! - [`roots`]: the platform's trusted CA certificates, read once.
//! - [`systemd`]: readiness notifications for a `Type=notify` unit (`sd_notify`).
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod declared;
pub mod doctor;
pub mod domain;
pub mod explain;
pub mod graph;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod oauth;
pub mod outbox;
pub mod reload;
pub mod retention;
pub mod roots;
pub mod settings;
pub mod smtp;
pub mod store;
pub mod systemd;
pub mod telemetry;
