-- User login flows (issue 17), PostgreSQL flavour (keep in step with ../sqlite).
-- Timestamps are unix seconds; every secret (session cookie, challenge,
-- verifier, authorization code) is stored only as its SHA-256.
--
-- clients.redirect_uris / post_logout_redirect_uris: JSON arrays of
--             absolute URIs, compared byte for byte (no wildcards).
-- clients.first_party: 1 when consent is skipped for the client.
-- environments.login_url / consent_url: where the browser is sent with a
--             login_challenge / consent_challenge (consent_url NULL: login_url).
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN first_party BIGINT NOT NULL DEFAULT 0;
ALTER TABLE environments ADD COLUMN login_url TEXT;
ALTER TABLE environments ADD COLUMN consent_url TEXT;

-- A browser's keyward session (cookie keyward_session): who logged in in it
-- and when. sid is the public id ID tokens carry.
CREATE TABLE browser_sessions (
    session_hash   BYTEA PRIMARY KEY,
    env            TEXT NOT NULL,
    sid            TEXT NOT NULL UNIQUE,
    subject        TEXT,
    auth_time      BIGINT,
    acr            TEXT,
    amr            TEXT,            -- JSON array
    claims         TEXT,            -- JSON object the login app supplied
    remember_until BIGINT,         -- a later request may skip login until then
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    ended_at       BIGINT
);

CREATE INDEX browser_sessions_by_expiry ON browser_sessions (expires_at);

-- Login and consent challenges of authorization requests in flight.
CREATE TABLE login_requests (
    challenge_hash BYTEA PRIMARY KEY,
    kind           TEXT NOT NULL,   -- 'login' or 'consent'
    env            TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    session_hash   BYTEA NOT NULL,   -- the browser session that started it
    request        TEXT NOT NULL,   -- JSON: the validated authorization request
    subject        TEXT,
    login          TEXT,            -- JSON: how the subject logged in (consent requests, accepted logins)
    skip           BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    decided_at     BIGINT,
    outcome        TEXT,            -- JSON: what the login app decided
    verifier_hash  BYTEA UNIQUE,
    verified_at    BIGINT
);

CREATE INDEX login_requests_by_expiry ON login_requests (expires_at);

-- Consents remembered per subject and client.
CREATE TABLE consents (
    env        TEXT NOT NULL,
    subject    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,       -- space-separated
    granted_at BIGINT NOT NULL,
    expires_at BIGINT,             -- NULL: until revoked
    PRIMARY KEY (env, subject, client_id)
);

-- Authorization codes: single use, short-lived, and what their exchange issued.
CREATE TABLE authorization_codes (
    code_hash      BYTEA PRIMARY KEY,
    env            TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,   -- S256
    nonce          TEXT,
    scope          TEXT NOT NULL,
    subject        TEXT NOT NULL,
    auth_time      BIGINT NOT NULL,
    acr            TEXT,
    amr            TEXT NOT NULL,   -- JSON array
    sid            TEXT NOT NULL,
    claims         TEXT NOT NULL,   -- JSON object (userinfo)
    issued_at      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    access_jti     TEXT,
    access_exp     BIGINT,
    family_id      TEXT
);

CREATE INDEX authorization_codes_by_expiry ON authorization_codes (expires_at);
