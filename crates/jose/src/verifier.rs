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
    by_kid: HashMap<String, Arc<PublicKey>>,
    unnamed: Vec<Arc<PublicKey>>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Adds a key; a second key with the same `kid` is refused.
    pub fn insert(&mut self, kid: Option<String>, key: PublicKey) -> Result<(), KeyError> {
        match kid {
            Some(kid) => {
                if self.by_kid.contains_key(&kid) {
                    return Err(KeyError::DuplicateKid(kid));
                }
                self.by_kid.insert(kid, Arc::new(key));
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

    /// The key with `kid`.
    pub fn get(&self, kid: &str) -> Option<&Arc<PublicKey>> {
        self.by_kid.get(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `kid`s in the set.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.by_kid.keys().map(String::as_str)
    }

    fn find(&self, kid: Option<&str>) -> Result<&PublicKey, TokenError> {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .map(|k| k.as_ref())
                .ok_or_else(|| TokenError::UnknownKid(kid.chars().take(64).collect())),
            None if self.len() == 1 => Ok(self
                .unnamed
                .first()
                .or_else(|| self.by_kid.values().next())
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
