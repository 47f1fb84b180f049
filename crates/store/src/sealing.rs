//! Sealing of private keys bound to their record (DESIGN rule 2).
//!
//! A key's PKCS#8 bytes are sealed with [`keyward_jose::seal`] under the root
//! key, with the record's environment and kid as associated data, so a sealed
//! blob copied onto another record (another kid, another environment) does
//! not open.
//!
//! The associated data ([`key_aad`]) is
//! `u32_be(len(env)) || env || kid` (UTF-8 bytes): the length prefix keeps the
//! split between environment and kid unambiguous whatever characters either
//! contains.

use keyward_jose::seal::{open, seal, RootKey, SealedKey};
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::records::{KeyMaterial, KeyRecord};

/// The associated data binding a sealed key to `env` and `kid`:
/// the 4-byte big-endian length of `env`, `env`, then `kid`.
pub fn key_aad(env: &str, kid: &str) -> Vec<u8> {
    let env_len = u32::try_from(env.len()).unwrap_or(u32::MAX);
    let mut aad = Vec::with_capacity(4 + env.len() + kid.len());
    aad.extend_from_slice(&env_len.to_be_bytes());
    aad.extend_from_slice(env.as_bytes());
    aad.extend_from_slice(kid.as_bytes());
    aad
}

/// The associated data binding an environment's sealed DPoP nonce secret
/// to it: a label no key's associated data starts with (a key's begins with
/// a 4-byte length), then the environment's name.
pub fn dpop_nonce_aad(env: &str) -> Vec<u8> {
    let mut aad = b"\xffkeyward dpop nonce secret\0".to_vec();
    aad.extend_from_slice(env.as_bytes());
    aad
}

/// Seals a fresh random DPoP nonce secret for environment `env` (a device
/// root blocks on the device for a bounded time).
pub fn seal_dpop_nonce_secret(root: &RootKey, env: &str) -> Result<SealedKey, StoreError> {
    let secret = Zeroizing::new(keyward_jose::crypto::random_bytes::<32>());
    Ok(seal(root, &dpop_nonce_aad(env), secret.as_ref())?)
}

/// Opens environment `env`'s sealed DPoP nonce secret.
pub fn open_dpop_nonce_secret(
    root: &RootKey,
    env: &str,
    sealed: &SealedKey,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    Ok(open(root, &dpop_nonce_aad(env), sealed)?)
}

/// Seals a private key (PKCS#8 DER) for the record `env`/`kid`. Fails
/// only for a root key in a device ([`StoreError::Seal`] with
/// [`keyward_jose::SealError::Unavailable`] when the device cannot be used
/// now); a device root blocks on the device for a bounded time.
pub fn seal_private_key(
    root: &RootKey,
    env: &str,
    kid: &str,
    pkcs8: &[u8],
) -> Result<SealedKey, StoreError> {
    Ok(seal(root, &key_aad(env, kid), pkcs8)?)
}

/// Opens a stored key's private half. Fails with [`StoreError::Seal`] for a
/// wrong root key, a blob moved from another record, or altered bytes, and
/// with [`StoreError::DeviceKey`] for a key whose private half is in a
/// device (it never leaves it).
pub fn open_private_key(root: &RootKey, key: &KeyRecord) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    match &key.material {
        KeyMaterial::Sealed(sealed) => Ok(open(root, &key_aad(&key.env, &key.kid), sealed)?),
        KeyMaterial::Device { store, .. } => Err(StoreError::DeviceKey {
            kid: key.kid.clone(),
            store: *store,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_jose::{Algorithm, SealError};

    fn record(env: &str, kid: &str, sealed: SealedKey) -> KeyRecord {
        KeyRecord {
            env: env.into(),
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            size_bits: 256,
            public_jwk: "{}".into(),
            material: KeyMaterial::Sealed(sealed),
            origin: "generated".into(),
            owner: None,
            description: None,
            created_at: 0,
            activates_at: 0,
            retires_at: None,
            removes_at: None,
            revoked_at: None,
            destroyed_at: None,
        }
    }

    #[test]
    fn a_device_key_does_not_open() {
        let root = RootKey::generate();
        let mut rec = record(
            "prod",
            "k1",
            seal_private_key(&root, "prod", "k1", b"x").unwrap(),
        );
        rec.material = KeyMaterial::Device {
            store: crate::KeyStoreName::Pkcs11,
            reference: "1/6b31".into(),
        };
        let e = open_private_key(&root, &rec).unwrap_err();
        assert!(matches!(e, StoreError::DeviceKey { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "key \"k1\" is held by the pkcs11 key store: its private half never leaves the device"
        );
    }

    #[test]
    fn aad_is_unambiguous() {
        assert_ne!(key_aad("ab", "c"), key_aad("a", "bc"));
        assert_ne!(key_aad("a\0b", "c"), key_aad("a", "b\0c"));
        assert_eq!(key_aad("prod", "k1"), b"\0\0\0\x04prodk1".to_vec());
    }

    #[test]
    fn sealed_key_is_bound_to_its_record() {
        let root = RootKey::generate();
        let sealed = seal_private_key(&root, "prod", "k1", b"private").unwrap();
        let ok = record("prod", "k1", sealed.clone());
        assert_eq!(open_private_key(&root, &ok).unwrap().as_slice(), b"private");
        for other in [
            record("prod", "k2", sealed.clone()),
            record("dev", "k1", sealed.clone()),
        ] {
            assert!(matches!(
                open_private_key(&root, &other),
                Err(StoreError::Seal(SealError::OpenFailed))
            ));
        }
        assert!(matches!(
            open_private_key(&RootKey::generate(), &ok),
            Err(StoreError::Seal(SealError::OpenFailed))
        ));
    }
}
