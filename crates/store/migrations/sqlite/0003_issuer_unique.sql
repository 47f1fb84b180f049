-- An issuer URL belongs to one environment (keep in step with ../postgres).
-- issuer_key is what a server routes by: the issuer URL's host (lower case,
-- with port) and path (no trailing slash), without the scheme. The store
-- fills it in for rows written before this migration (Store::backfill_issuer_keys).
ALTER TABLE environments ADD COLUMN issuer_key TEXT;
CREATE UNIQUE INDEX environments_by_issuer_key ON environments (issuer_key);
