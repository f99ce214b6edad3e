//! Router tests of the core API (`oneshot`, no sockets): every analysis endpoint over a real store and the
//! Istio samples, their error paths, authentication and namespace scope on SQLite and PostgreSQL, the
//! limits, and the OpenAPI document.

mod auth;
mod cache;
mod common;
mod endpoints;
mod openapi;
