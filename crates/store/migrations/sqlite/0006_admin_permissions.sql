-- Fine-grained admin tokens, sqlite flavour (keep in step with ../postgres).
--
-- admin_tokens.permissions: the token's grants, space-separated
--             (`keyward.env.prod.keys.*`, `keyward.audit.read`, `*`).
--             Tokens made before this migration hold `*` (every
--             permission), so nothing that worked before stops working.
-- admin_tokens.owner:      who the token was made for (`--owner`); NULL for
--             tokens made before owners existed.
-- admin_tokens.expires_at: when the token stops working; NULL: never (tokens
--             made before expiries existed, or `--ttl never`).
-- admin_tokens.created_by: the actor that made it (`cli:<user>`,
--             `admin:<token id>`, `sso:<subject>`); NULL for older tokens.
ALTER TABLE admin_tokens ADD COLUMN permissions TEXT NOT NULL DEFAULT '*';
ALTER TABLE admin_tokens ADD COLUMN owner TEXT;
ALTER TABLE admin_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE admin_tokens ADD COLUMN created_by TEXT;
