-- keyward store schema, PostgreSQL flavour (keep in step with ../sqlite).
-- Timestamps are unix seconds.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE environments (
    name       TEXT PRIMARY KEY,
    issuer     TEXT NOT NULL,
    policy     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE keys (
    kid          TEXT PRIMARY KEY,
    env          TEXT NOT NULL REFERENCES environments (name),
    alg          TEXT NOT NULL,
    size_bits    BIGINT NOT NULL,
    public_jwk   TEXT NOT NULL,
    sealed       BYTEA NOT NULL,
    origin       TEXT NOT NULL,
    owner        TEXT,
    description  TEXT,
    created_at   BIGINT NOT NULL,
    activates_at BIGINT NOT NULL,
    retires_at   BIGINT,
    removes_at   BIGINT,
    revoked_at   BIGINT
);

CREATE INDEX keys_by_env ON keys (env, activates_at, kid);

-- The audit chain: append-only, each row hashes its predecessor.
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    env       TEXT,
    subject   TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
