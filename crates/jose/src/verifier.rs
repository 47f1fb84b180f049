//! Verifying tokens against a set of keys indexed by `kid`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::b64;
use crate::claims::{Claims, Validation};
use crate::error::{Error, KeyError, TokenError};
use crate::jwk::JwkSet;
use crate::jws::{check_signature, split, Header};
use crate::key::PublicKey;

/// Public keys by `kid`, each parsed once. A key without a `kid` can only be
/// used when it is the only key in the set.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    /// Keys with a `kid`, in insertion order.
    named: Vec<(String, Arc<PublicKey>)>,
    /// Index into `named` by `kid`, built only past [`SCAN_MAX`] keys: a
    /// short linear scan beats hashing the `kid`.
    index: Option<HashMap<String, usize>>,
    unnamed: Vec<Arc<PublicKey>>,
}

/// Largest number of named keys found by a linear scan.
const SCAN_MAX: usize = 8;

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Adds a key; a second key with the same `kid` is refused.
    pub fn insert(&mut self, kid: Option<String>, key: PublicKey) -> Result<(), KeyError> {
        match kid {
            Some(kid) => {
                if self.position(&kid).is_some() {
                    return Err(KeyError::DuplicateKid(kid));
                }
                self.named.push((kid, Arc::new(key)));
                if let Some(index) = &mut self.index {
                    index.insert(
                        self.named[self.named.len() - 1].0.clone(),
                        self.named.len() - 1,
                    );
                } else if self.named.len() > SCAN_MAX {
                    let index = self.named.iter().enumerate();
                    self.index = Some(index.map(|(i, (k, _))| (k.clone(), i)).collect());
                }
            }
            None => self.unnamed.push(Arc::new(key)),
        }
        Ok(())
    }

    /// The keys of a JWK Set.
    pub fn from_jwks(set: &JwkSet) -> Result<Self, KeyError> {
        let mut ks = KeySet::new();
        for k in &set.keys {
            ks.insert(k.kid.clone(), k.key.clone())?;
        }
        Ok(ks)
    }

    fn position(&self, kid: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(kid).copied(),
            None => self.named.iter().position(|(k, _)| k == kid),
        }
    }

    /// The key with `kid`.
    pub fn get(&self, kid: &str) -> Option<&Arc<PublicKey>> {
        self.position(kid).map(|i| &self.named[i].1)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.named.len() + self.unnamed.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `kid`s in the set.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|(k, _)| k.as_str())
    }

    fn find(&self, kid: Option<&str>) -> Result<&PublicKey, TokenError> {
        match kid {
            Some(kid) => self
                .get(kid)
                .map(|k| k.as_ref())
                .ok_or_else(|| TokenError::UnknownKid(kid.chars().take(64).collect())),
            None if self.len() == 1 => Ok(self
                .unnamed
                .first()
                .or_else(|| self.named.first().map(|(_, k)| k))
                .expect("one key")),
            None => Err(TokenError::MissingKid),
        }
    }
}

/// A token whose signature and claims passed.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    pub header: Header,
    pub claims: Claims,
}

/// Verifies a compact JWT at `now` (unix seconds): structure and header,
/// key by `kid`, algorithm, signature, then claims and policy.
pub fn verify_jwt(
    token: &str,
    keys: &KeySet,
    policy: &Validation,
    now: i64,
) -> Result<VerifiedToken, Error> {
    let parts = split(token, policy.max_token_len)?;
    let key = keys.find(parts.header.kid.as_deref())?;
    check_signature(&parts, key, &policy.algorithms)?;
    policy.check_typ(parts.header.typ.as_deref())?;
    // The decoder writes into its worst-case estimate: reserve exactly that.
    let mut payload = Vec::with_capacity(base64::decoded_len_estimate(parts.payload_b64.len()));
    if !b64::decode_into(parts.payload_b64, &mut payload) {
        return Err(TokenError::Base64("payload").into());
    }
    let claims = Claims::parse(payload, &policy.required_claims)?;
    policy.check_claims(&claims, now)?;
    Ok(VerifiedToken {
        header: parts.header,
        claims,
    })
}

/// A key set and a policy together.
#[derive(Clone, Debug)]
pub struct Verifier {
    pub keys: KeySet,
    pub policy: Validation,
}

impl Verifier {
    /// A verifier over `keys` with `policy`.
    pub fn new(keys: KeySet, policy: Validation) -> Self {
        Verifier { keys, policy }
    }

    /// See [`verify_jwt`].
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, Error> {
        verify_jwt(token, &self.keys, &self.policy, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, PrivateKey};

    #[test]
    fn keyset_scan_and_index_agree() {
        let keys: Vec<PublicKey> = (0..12)
            .map(|_| {
                let k = PrivateKey::generate(Algorithm::EdDSA, None).unwrap();
                k.public_key().clone()
            })
            .collect();
        let mut set = KeySet::new();
        for (i, k) in keys.iter().enumerate() {
            set.insert(Some(format!("k{i}")), k.clone()).unwrap();
            assert_eq!(set.len(), i + 1);
            for (j, k) in keys.iter().enumerate().take(i + 1) {
                assert_eq!(set.get(&format!("k{j}")).map(|p| p.as_ref()), Some(k));
            }
            assert!(set.get(&format!("k{}", i + 1)).is_none());
            assert!(matches!(
                set.insert(Some("k0".into()), k.clone()),
                Err(KeyError::DuplicateKid(_))
            ));
            assert!(matches!(
                set.insert(Some(format!("k{i}")), k.clone()),
                Err(KeyError::DuplicateKid(_))
            ));
        }
        assert_eq!(set.kids().count(), 12);
        assert!(matches!(set.find(None), Err(TokenError::MissingKid)));
        let mut one = KeySet::new();
        one.insert(Some("only".into()), keys[0].clone()).unwrap();
        assert_eq!(one.find(None).unwrap(), &keys[0]);
    }
}
