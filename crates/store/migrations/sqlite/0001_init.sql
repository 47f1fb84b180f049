-- keyward store schema, SQLite flavour (keep in step with ../postgres).
-- Timestamps are unix seconds. Tables are STRICT so a value of the wrong type is refused.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE environments (
    name       TEXT PRIMARY KEY NOT NULL,
    issuer     TEXT NOT NULL,
    policy     TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE keys (
    kid          TEXT PRIMARY KEY NOT NULL,
    env          TEXT NOT NULL REFERENCES environments (name),
    alg          TEXT NOT NULL,
    size_bits    INTEGER NOT NULL,
    public_jwk   TEXT NOT NULL,
    sealed       BLOB NOT NULL,
    origin       TEXT NOT NULL,
    owner        TEXT,
    description  TEXT,
    created_at   INTEGER NOT NULL,
    activates_at INTEGER NOT NULL,
    retires_at   INTEGER,
    removes_at   INTEGER,
    revoked_at   INTEGER
) STRICT;

CREATE INDEX keys_by_env ON keys (env, activates_at, kid);

-- The audit chain: append-only, each row hashes its predecessor.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    env       TEXT,
    subject   TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;
