-- meshlens-api: bearer tokens of the REST API (api/src/tokens.rs). Only the SHA-256 of a token is kept:
-- the token itself is shown once, by `meshlens token create`, and cannot be recovered from this table.
-- Times are microseconds since the Unix epoch, UTC.

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Lowercase hex SHA-256 of the whole token string.
    token_hash   TEXT    NOT NULL UNIQUE,
    -- A label for people ("grafana", "ci"); not unique.
    name         TEXT    NOT NULL,
    -- 'viewer' or 'admin'.
    role         TEXT    NOT NULL CHECK (role IN ('viewer', 'admin')),
    -- NULL: every namespace; else the only namespace whose data the token sees.
    namespace    TEXT,
    created_at   INTEGER NOT NULL,
    -- Updated at most once a minute per token, so reads do not turn into a write each.
    last_used_at INTEGER,
    -- Set once by `meshlens token revoke`; a revoked token is refused.
    revoked_at   INTEGER
);
