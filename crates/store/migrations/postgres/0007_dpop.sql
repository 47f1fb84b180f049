-- DPoP (RFC 9449), PostgreSQL flavour (keep in step with ../sqlite).
--
-- clients.dpop_bound_access_tokens: 1 when the client must send a DPoP proof
--   with every token request (RFC 9449 §5.2), so its access tokens are
--   always bound to a key.
-- refresh_tokens.dpop_jkt: the thumbprint of the DPoP key the refresh token's
--   family is bound to (public clients, RFC 9449 §5); copied on rotation, and
--   a refresh without a proof by that key is refused. NULL: not bound.
ALTER TABLE clients ADD COLUMN dpop_bound_access_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE refresh_tokens ADD COLUMN dpop_jkt TEXT;
