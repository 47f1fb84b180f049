-- Device authorization grant (RFC 8628), SQLite flavour (keep in step with ../postgres).
--
-- device_authorizations: one device's request, from the device endpoint
--             until its device_code is redeemed or expires.
--   device_hash    SHA-256 of the device_code (the device's secret; the
--                  PKCE verifier of its login is derived from it, so the
--                  store holds nothing that redeems it).
--   user_code_hash SHA-256 of the environment and the normalised user code
--                  (what the user types).
--   code_challenge the S256 PKCE challenge of the login started for it (its
--                  verifier is derived from the device_code).
--   status         'pending' (no user yet), 'entered' (a user confirmed the
--                  code and is logging in), 'approved' (the login ended in a
--                  code: code_hash), 'denied' (the login or consent was
--                  rejected: error).
--   state_hash     SHA-256 of the state of the login started for it.
--   interval_secs  the polling interval (RFC 8628 §3.5: slow_down adds 5).
--   consumed_at    when its tokens were issued (once).
CREATE TABLE device_authorizations (
    device_hash    BLOB PRIMARY KEY NOT NULL,
    user_code_hash BLOB NOT NULL UNIQUE,
    env            TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    status         TEXT NOT NULL,
    state_hash     BLOB UNIQUE,
    code_hash      BLOB,
    error          TEXT,
    interval_secs  INTEGER NOT NULL,
    last_poll_at   INTEGER,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    consumed_at    INTEGER
) STRICT;

CREATE INDEX device_authorizations_by_expiry ON device_authorizations (expires_at);
CREATE INDEX device_authorizations_by_client ON device_authorizations (env, client_id);
