-- DPoP server nonces (RFC 9449 §8), SQLite flavour (keep in step with ../postgres).
--
-- environments.dpop_nonce_secret: when the environment's token endpoint
--   requires DPoP nonces, the 32-byte secret its nonces are keyed by, sealed
--   under the root key like a private key (associated data: the environment's
--   name, see keyward_store::sealing::dpop_nonce_aad); re-wrapped with the
--   keys when the root key rotates. NULL: nonces are not required.
ALTER TABLE environments ADD COLUMN dpop_nonce_secret BLOB;
