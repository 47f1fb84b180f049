-- Refresh-token lineage and the access token each issuance produced,
-- SQLite flavour (keep in step with ../postgres).
--
-- parent:     SHA-256 of the refresh token this one was rotated from (NULL for
--             the first token of a family, and for rows written before 0004).
-- access_jti: the jti of the access token minted in the same issuance, and
-- access_exp: its expiry; revoking the family puts it on the revocation feed.
ALTER TABLE refresh_tokens ADD COLUMN parent BLOB;
ALTER TABLE refresh_tokens ADD COLUMN access_jti TEXT;
ALTER TABLE refresh_tokens ADD COLUMN access_exp INTEGER;

CREATE INDEX refresh_tokens_by_parent ON refresh_tokens (parent);
