-- mTLS clients (RFC 8705), SQLite flavour (keep in step with ../postgres).
--
-- clients.tls_subject_kind: which name of a tls_client_auth client's
--             certificate must match: 'subject_dn', 'san_dns', 'san_uri',
--             'san_ip' or 'san_email'; NULL for other clients.
-- clients.tls_subject: that name (a DN in keyward's canonical RFC 4514 form).
-- clients.tls_bound_tokens: tls_client_certificate_bound_access_tokens:
--             1 or 0; NULL = the default (bound for mTLS-authenticated clients).
ALTER TABLE clients ADD COLUMN tls_subject_kind TEXT;
ALTER TABLE clients ADD COLUMN tls_subject TEXT;
ALTER TABLE clients ADD COLUMN tls_bound_tokens INTEGER;
