//! The HTTP side of Postern: the JSON API (`/api/v1`), the admin web UI (`/admin`), the OAuth
//! redirect endpoint (`/oauth/callback`) and `/healthz`, behind one router.
//!
//! Handlers are thin: they parse, check who is calling, call the same library functions as the
//! CLI, and shape the answer.
//!
//! What a client can make it spend is bounded in three places: [`listener`] (connections, slow
//! or silent clients), the router (request timeout, body sizes) and [`budget`] (the memory of
//! message submissions in flight).

pub mod admin;
pub mod api;
pub mod auth;
mod base_url;
pub mod budget;
pub mod consent;
pub mod error;
pub(crate) mod headers;
pub mod listener;
pub mod openapi;
mod router;
pub mod state;

pub use api::{ApiRoute, api_routes};
pub use error::{ApiError, Problem};
pub use listener::{ConnectionLimits, serve};
pub use router::router;
pub use state::AppState;
