//! Who is calling: the [`Caller`] a bearer token resolves to, with its [`Role`] and optional namespace
//! scope. Handlers take `Extension<Caller>`; a scoped caller never sees another namespace's data.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read every analysis, chart, report and the SQL endpoint.
    Viewer,
    /// Also manage schedules, tokens and the configuration.
    Admin,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// `Some(ns)`: only data of namespace `ns` (records whose source or destination is in it).
    pub namespace: Option<String>,
}

impl Caller {
    /// Whoever calls when authentication is off (`--insecure-no-auth`): an unscoped admin.
    pub fn unrestricted() -> Self {
        Caller { role: Role::Admin, namespace: None }
    }
}
