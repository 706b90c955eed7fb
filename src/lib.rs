//! Postern: SMTP OAuth 2.0 connections, consent, token keeping, and a relay for legacy apps.
//!
//! # Layout
//!
//! - [`domain`]: newtypes that parse at the edge (names, addresses, tenants, scopes, the connection record).
//! - [`oauth`]: consent flows and the token manager that keeps access tokens fresh.
//! - [`smtp`]: the upstream client that delivers with XOAUTH2, and the relay server for legacy apps.
#![forbid(unsafe_code)]

pub mod domain;
pub mod net;
pub mod oauth;
pub mod settings;
pub mod smtp;
pub mod store;
