-- keyward issuer records, PostgreSQL flavour (keep in step with ../sqlite).
-- Timestamps are unix seconds. Hashes are raw SHA-256 bytes.

-- The change counter running servers poll (see Store::generation).
INSERT INTO meta (name, value) VALUES ('generation', '0') ON CONFLICT (name) DO NOTHING;

CREATE TABLE clients (
    env                    TEXT NOT NULL REFERENCES environments (name),
    client_id              TEXT NOT NULL,
    name                   TEXT NOT NULL,
    auth                   TEXT NOT NULL,
    secret_hash            BYTEA,
    jwks                   TEXT,
    jwks_uri               TEXT,
    scopes                 TEXT NOT NULL,   -- space-separated
    audiences              TEXT NOT NULL,   -- JSON array of strings
    grant_types            TEXT NOT NULL,   -- JSON array of strings
    access_token_ttl_secs  BIGINT,
    refresh_token_ttl_secs BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    PRIMARY KEY (env, client_id)
);

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    env        TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    family_id  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    scope      TEXT NOT NULL,
    audience   TEXT,
    extra      TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT,
    revoked_at BIGINT,
    FOREIGN KEY (env, client_id) REFERENCES clients (env, client_id)
);

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_client ON refresh_tokens (env, client_id);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);

-- Revoked access-token jtis: the revocation feed. An identity column, so a
-- seq is never handed out twice, even after the newest rows are purged.
CREATE TABLE revocations (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    env        TEXT NOT NULL REFERENCES environments (name),
    jti        TEXT NOT NULL,
    exp        BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL,
    UNIQUE (env, jti)
);

CREATE INDEX revocations_by_env ON revocations (env, seq);
CREATE INDEX revocations_by_exp ON revocations (exp);

-- jtis of client assertions (RFC 7523) seen within their lifetime.
CREATE TABLE assertion_jtis (
    env       TEXT NOT NULL,
    client_id TEXT NOT NULL,
    jti       TEXT NOT NULL,
    exp       BIGINT NOT NULL,
    PRIMARY KEY (env, client_id, jti)
);

CREATE INDEX assertion_jtis_by_exp ON assertion_jtis (exp);

CREATE TABLE admin_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
