-- keyward issuer records, SQLite flavour (keep in step with ../postgres).
-- Timestamps are unix seconds. Hashes are raw SHA-256 bytes.

-- The change counter running servers poll (see Store::generation).
INSERT INTO meta (name, value) VALUES ('generation', '0') ON CONFLICT (name) DO NOTHING;

CREATE TABLE clients (
    env                    TEXT NOT NULL REFERENCES environments (name),
    client_id              TEXT NOT NULL,
    name                   TEXT NOT NULL,
    auth                   TEXT NOT NULL,
    secret_hash            BLOB,
    jwks                   TEXT,
    jwks_uri               TEXT,
    scopes                 TEXT NOT NULL,   -- space-separated
    audiences              TEXT NOT NULL,   -- JSON array of strings
    grant_types            TEXT NOT NULL,   -- JSON array of strings
    access_token_ttl_secs  INTEGER,
    refresh_token_ttl_secs INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    PRIMARY KEY (env, client_id)
) STRICT;

CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    env        TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    family_id  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    scope      TEXT NOT NULL,
    audience   TEXT,
    extra      TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    rotated_at INTEGER,
    revoked_at INTEGER,
    FOREIGN KEY (env, client_id) REFERENCES clients (env, client_id)
) STRICT;

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_client ON refresh_tokens (env, client_id);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);

-- Revoked access-token jtis: the revocation feed. AUTOINCREMENT so a seq is
-- never handed out twice, even after the newest rows are purged.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    env        TEXT NOT NULL REFERENCES environments (name),
    jti        TEXT NOT NULL,
    exp        INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL,
    UNIQUE (env, jti)
) STRICT;

CREATE INDEX revocations_by_env ON revocations (env, seq);
CREATE INDEX revocations_by_exp ON revocations (exp);

-- jtis of client assertions (RFC 7523) seen within their lifetime.
CREATE TABLE assertion_jtis (
    env       TEXT NOT NULL,
    client_id TEXT NOT NULL,
    jti       TEXT NOT NULL,
    exp       INTEGER NOT NULL,
    PRIMARY KEY (env, client_id, jti)
) STRICT;

CREATE INDEX assertion_jtis_by_exp ON assertion_jtis (exp);

CREATE TABLE admin_tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
