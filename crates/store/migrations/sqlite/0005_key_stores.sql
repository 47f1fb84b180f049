-- Key stores: where an environment's new keys and each key live,
-- SQLite flavour (keep in step with ../postgres).
--
-- environments.key_store: the store new keys of the environment are made in:
--             'local' (sealed in this database), 'pkcs11' or 'aws-kms'.
-- keys.key_store:   where this key's private half lives.
-- keys.hw_ref:      for a device key, how to find it in its device (PKCS#11
--                   token serial and CKA_ID, or the KMS key ARN); NULL for
--                   'local'. A device key's `sealed` is the empty blob.
-- keys.destroyed_at: when the device object was destroyed (or its deletion
--                   scheduled) after the key left the JWKS; NULL until then.
ALTER TABLE environments ADD COLUMN key_store TEXT NOT NULL DEFAULT 'local';
ALTER TABLE keys ADD COLUMN key_store TEXT NOT NULL DEFAULT 'local';
ALTER TABLE keys ADD COLUMN hw_ref TEXT;
ALTER TABLE keys ADD COLUMN destroyed_at INTEGER;
