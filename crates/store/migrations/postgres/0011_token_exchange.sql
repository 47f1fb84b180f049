-- Token exchange (RFC 8693), PostgreSQL flavour (keep in step with ../sqlite).
--
-- clients.exchange_issuers: a JSON array of issuer URLs (each a trusted
--             issuer of the client's environment, see the server's
--             [[token_exchange.trusted_issuers]]) whose tokens the client may
--             present as subject_token or actor_token, on top of its own
--             environment's. '[]': its own environment's tokens only. The
--             grant itself is allowed by grant_types holding
--             urn:ietf:params:oauth:grant-type:token-exchange.
ALTER TABLE clients ADD COLUMN exchange_issuers TEXT NOT NULL DEFAULT '[]';

-- Pushed authorization requests (RFC 9126).
--
-- clients.require_par: 1 when the client's authorization requests must be
--             pushed first (require_pushed_authorization_requests).
-- pushed_requests: a checked authorization request, pushed by its
--             authenticated client, waiting for the browser to bring its
--             request_uri (stored only as its SHA-256) to the authorization
--             endpoint once, before expires_at.
ALTER TABLE clients ADD COLUMN require_par BIGINT NOT NULL DEFAULT 0;

CREATE TABLE pushed_requests (
    uri_hash   BYTEA PRIMARY KEY NOT NULL,
    env        TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    request    TEXT NOT NULL,   -- JSON: the validated authorization request
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE INDEX pushed_requests_by_expiry ON pushed_requests (expires_at);
