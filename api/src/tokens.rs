//! API tokens: creation, listing, revocation and lookup, in the `api_tokens` table of the store's catalog
//! database (SQLite or PostgreSQL, migrated with the store).
//!
//! A token is `mlk_` followed by 32 random bytes from the operating system in hex: 256 bits of entropy, so
//! one unsalted SHA-256 is enough to store it (nothing can be guessed from the hash, and a fast hash keeps
//! the lookup on every request cheap). The token itself is returned once, by [`Tokens::create`], and is
//! never stored. `meshlens token create|list|revoke` and the authentication middleware both use [`Tokens`].

use crate::auth::{Caller, Role};
use chrono::{DateTime, Utc};
use meshlens_store::{Catalog, StoreConfig, StoreError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::Path;

/// What every token starts with, so that secret scanners (and people) recognize one.
pub const TOKEN_PREFIX: &str = "mlk_";
/// `last_used_at` is written at most this often per token.
const LAST_USED_RESOLUTION_MICROS: i64 = 60_000_000;

/// One token as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub namespace: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenInfo {
    /// The caller this token authenticates.
    pub fn caller(&self) -> Caller {
        Caller { role: self.role, namespace: self.namespace.clone() }
    }
}

/// A token just created: its listing and the secret, which exists nowhere else.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub info: TokenInfo,
    pub secret: String,
}

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("no token with id {0}")]
    NotFound(i64),
    #[error("token {0} is already revoked")]
    AlreadyRevoked(i64),
    #[error("reading random bytes for the token: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The token table.
#[derive(Debug, Clone)]
pub struct Tokens {
    catalog: Catalog,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    role: String,
    namespace: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

const LIST: &str = "SELECT id, name, role, namespace, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY id";
const BY_ID: &str =
    "SELECT id, name, role, namespace, created_at, last_used_at, revoked_at FROM api_tokens WHERE id = $1";
const LIVE_BY_HASH: &str = "SELECT id, name, role, namespace, created_at, last_used_at, revoked_at FROM api_tokens \
    WHERE token_hash = $1 AND revoked_at IS NULL";

/// Runs `$body` with `$pool` bound to the catalog's pool, written once for both backends.
macro_rules! with_pool {
    ($catalog:expr, $pool:ident => $body:expr) => {
        match $catalog {
            Catalog::Sqlite($pool) => $body,
            Catalog::Postgres($pool) => $body,
        }
    };
}

fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Lowercase hex SHA-256 of `token`, as stored.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// A fresh token: the prefix and 32 bytes of the OS's randomness in hex.
fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    token.push_str(TOKEN_PREFIX);
    for byte in bytes {
        let _ = write!(token, "{byte:02x}");
    }
    Ok(token)
}

/// A namespace as Kubernetes accepts it (RFC 1123 label): what a scope can name.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    let valid = !namespace.is_empty()
        && namespace.len() <= 63
        && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid namespace {namespace:?}: expected a Kubernetes namespace name (lowercase letters, digits and \
             '-', at most 63 characters, starting and ending with a letter or digit)"
        ))
    }
}

impl TryFrom<TokenRow> for TokenInfo {
    type Error = TokenError;

    fn try_from(row: TokenRow) -> Result<Self, TokenError> {
        let role =
            row.role.parse().map_err(|e| TokenError::Invalid(format!("token {} in the database: {e}", row.id)))?;
        Ok(TokenInfo {
            id: row.id,
            name: row.name,
            role,
            namespace: row.namespace,
            created_at: micros_to_time(row.created_at),
            last_used_at: row.last_used_at.map(micros_to_time),
            revoked_at: row.revoked_at.map(micros_to_time),
        })
    }
}

impl Tokens {
    /// The tokens in `catalog`'s database (migrated by the store when it opened).
    pub fn new(catalog: Catalog) -> Self {
        Tokens { catalog }
    }

    /// The tokens of the store configured by `config`, opening only its catalog database (the store's
    /// `database_url` rules: PostgreSQL, `sqlite:PATH`, or `<data_dir>/meshlens.db`) and applying the
    /// migrations. Unlike opening the store this takes no lock on the data directory, so tokens can be
    /// managed next to a running `meshlens serve`.
    pub async fn connect(config: &StoreConfig) -> Result<Tokens, TokenError> {
        let url = config.database_url.as_deref().filter(|u| !u.is_empty());
        let catalog = match url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Catalog::connect_postgres(url).await?
            }
            Some(url) => {
                let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).ok_or_else(|| {
                    TokenError::Invalid("the database URL is neither postgres:// nor sqlite:".to_owned())
                })?;
                Catalog::open_sqlite(Path::new(path), false).await?
            }
            None => {
                std::fs::create_dir_all(&config.data_dir).map_err(|e| {
                    TokenError::Invalid(format!("creating the data directory {}: {e}", config.data_dir.display()))
                })?;
                Catalog::open_sqlite(&config.data_dir.join("meshlens.db"), false).await?
            }
        };
        catalog.migrate().await?;
        Ok(Tokens::new(catalog))
    }

    /// Closes the database connections.
    pub async fn close(self) {
        self.catalog.close().await;
    }

    fn err(&self, context: &'static str) -> impl FnOnce(sqlx::Error) -> TokenError + use<> {
        let backend = self.catalog.backend();
        move |cause| TokenError::Store(StoreError::Catalog { backend, context: context.to_owned(), cause })
    }

    /// Creates a token; the returned secret is shown once and never stored.
    pub async fn create(&self, role: Role, namespace: Option<&str>, name: &str) -> Result<NewToken, TokenError> {
        if let Some(namespace) = namespace {
            validate_namespace(namespace).map_err(TokenError::Invalid)?;
        }
        if name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(TokenError::Invalid(
                "a token name has at most 200 characters and no control characters".into(),
            ));
        }
        let secret = generate()?;
        let created_at = now_micros();
        let id: i64 = with_pool!(&self.catalog, pool => {
            sqlx::query_scalar(
                "INSERT INTO api_tokens (token_hash, name, role, namespace, created_at) VALUES ($1, $2, $3, $4, $5) \
                 RETURNING id",
            )
            .bind(token_hash(&secret))
            .bind(name)
            .bind(role.as_str())
            .bind(namespace)
            .bind(created_at)
            .fetch_one(pool)
            .await
            .map_err(self.err("creating a token"))?
        });
        let info = TokenInfo {
            id,
            name: name.to_owned(),
            role,
            namespace: namespace.map(str::to_owned),
            created_at: micros_to_time(created_at),
            last_used_at: None,
            revoked_at: None,
        };
        Ok(NewToken { info, secret })
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let rows: Vec<TokenRow> = with_pool!(&self.catalog, pool => {
            sqlx::query_as(LIST).fetch_all(pool).await.map_err(self.err("listing tokens"))?
        });
        rows.into_iter().map(TokenInfo::try_from).collect()
    }

    /// Revokes token `id`; from then on it is refused.
    pub async fn revoke(&self, id: i64) -> Result<TokenInfo, TokenError> {
        let now = now_micros();
        let updated = with_pool!(&self.catalog, pool => {
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await
                .map_err(self.err("revoking a token"))?
                .rows_affected()
        });
        let row: Option<TokenRow> = with_pool!(&self.catalog, pool => {
            sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await.map_err(self.err("reading a token"))?
        });
        match row {
            None => Err(TokenError::NotFound(id)),
            Some(_) if updated == 0 => Err(TokenError::AlreadyRevoked(id)),
            Some(row) => row.try_into(),
        }
    }

    /// The live (not revoked) token whose secret is `secret`, noting that it was used.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<TokenInfo>, TokenError> {
        // Anything not shaped like a token cannot match a hash; no need to ask the database.
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() != TOKEN_PREFIX.len() + 64 {
            return Ok(None);
        }
        let row: Option<TokenRow> = with_pool!(&self.catalog, pool => {
            sqlx::query_as(LIVE_BY_HASH)
                .bind(token_hash(secret))
                .fetch_optional(pool)
                .await
                .map_err(self.err("looking up a token"))?
        });
        let Some(row) = row else { return Ok(None) };
        let now = now_micros();
        if row.last_used_at.is_none_or(|last| now - last >= LAST_USED_RESOLUTION_MICROS) {
            with_pool!(&self.catalog, pool => {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(row.id)
                    .execute(pool)
                    .await
                    .map_err(self.err("noting a token's use"))?;
            });
        }
        row.try_into().map(Some)
    }
}
