-- Token exchange (RFC 8693), SQLite flavour (keep in step with ../postgres).
--
-- clients.exchange_issuers: a JSON array of issuer URLs (each a trusted
--             issuer of the client's environment, see the server's
--             [[token_exchange.trusted_issuers]]) whose tokens the client may
--             present as subject_token or actor_token, on top of its own
--             environment's. '[]': its own environment's tokens only. The
--             grant itself is allowed by grant_types holding
--             urn:ietf:params:oauth:grant-type:token-exchange.
ALTER TABLE clients ADD COLUMN exchange_issuers TEXT NOT NULL DEFAULT '[]';
