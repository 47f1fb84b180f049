//! Verifying tokens against a set of keys indexed by `kid`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::alg::Algorithm;
use crate::claims::Validation;
use crate::error::{Error, KeyError, TokenError};
use crate::jwk::JwkSet;
use crate::jws::Header;
use crate::key::PublicKey;
use crate::token::{UnverifiedToken, VerifiedToken};

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
    /// Kids of keys left out because their user does not accept their
    /// algorithm ([`KeySet::insert_not_accepted`]), with that algorithm.
    not_accepted: Vec<(String, Algorithm)>,
    /// Header segments already verified with a key of this set, read once.
    memo: Box<[OnceLock<HeaderMemo>; MEMO_SLOTS]>,
}

/// Largest number of named keys found by a linear scan.
const SCAN_MAX: usize = 8;

/// How many distinct header segments a set remembers.
///
/// An issuer sends the same header bytes with every token of one key, so
/// after the first token the header is neither decoded nor parsed again:
/// a byte comparison finds its reading and its key. Only the header of a
/// token that passed entirely is remembered (a forger cannot fill the
/// slots, nor can tokens of another type from the same key), its reading is
/// the one `decode_header` gave, and the algorithm and `typ` checks still
/// run on every token.
const MEMO_SLOTS: usize = 4;

/// A header segment, its reading and the key its `kid` chose.
#[derive(Clone, Debug)]
pub(crate) struct HeaderMemo {
    segment: Box<str>,
    pub(crate) header: Arc<Header>,
    pub(crate) key: Arc<PublicKey>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Adds a key; a second key with the same `kid` is refused.
    pub fn insert(&mut self, kid: Option<String>, key: PublicKey) -> Result<(), KeyError> {
        // A new key can change which key a header selects (a kid-less header
        // selects the only key): forget what was remembered.
        *self.memo = Default::default();
        match kid {
            Some(kid) => {
                if self.knows(&kid) {
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

    /// Records a key that is published but not used here because its
    /// algorithm is not accepted (a gate whose policy leaves ML-DSA out, say):
    /// the key is not kept, but a token naming `kid` is refused as
    /// [`TokenError::AlgorithmNotAllowed`] rather than as an unknown kid, so a
    /// caller that refetches keys for unknown kids does not refetch for it.
    /// A `kid` already in the set is refused.
    pub fn insert_not_accepted(&mut self, kid: String, alg: Algorithm) -> Result<(), KeyError> {
        if self.knows(&kid) {
            return Err(KeyError::DuplicateKid(kid));
        }
        self.not_accepted.push((kid, alg));
        Ok(())
    }

    /// Whether `kid` names a key of the set or one left out of it.
    fn knows(&self, kid: &str) -> bool {
        self.position(kid).is_some() || self.not_accepted.iter().any(|(k, _)| k == kid)
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

    /// Number of keys (those left out as not accepted do not count).
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

    /// The key a header with `kid` selects.
    pub(crate) fn find(&self, kid: Option<&str>) -> Result<&Arc<PublicKey>, TokenError> {
        match kid {
            Some(kid) => self.get(kid).ok_or_else(|| {
                match self.not_accepted.iter().find(|(k, _)| k == kid) {
                    Some((_, alg)) => TokenError::AlgorithmNotAllowed(alg.name()),
                    None => TokenError::UnknownKid(kid.chars().take(64).collect()),
                }
            }),
            None if self.len() == 1 => Ok(self
                .unnamed
                .first()
                .or_else(|| self.named.first().map(|(_, k)| k))
                .expect("one key")),
            None => Err(TokenError::MissingKid),
        }
    }

    /// The remembered reading of `segment` and its key, if any. `reading`,
    /// when given, is the reading of `segment` at hand: when it is this
    /// set's own (handed out by [`UnverifiedToken::parse_known`]) its slot
    /// is found without comparing bytes.
    pub(crate) fn remembered(
        &self,
        segment: &str,
        reading: Option<&Arc<Header>>,
    ) -> Option<&HeaderMemo> {
        self.memo
            .iter()
            .map_while(OnceLock::get)
            .find(|m| reading.is_some_and(|r| Arc::ptr_eq(r, &m.header)) || &*m.segment == segment)
    }

    /// Whether a token with exactly `token`'s header bytes was verified
    /// with this set before. A hint for choosing among key sets, never a
    /// verification.
    pub fn remembers(&self, token: &UnverifiedToken<'_>) -> bool {
        self.remembered(token.header_segment(), None).is_some()
    }

    /// Remembers a verified header segment in the first free slot, if any.
    pub(crate) fn remember(&self, segment: &str, header: &Arc<Header>, key: &Arc<PublicKey>) {
        for slot in self.memo.iter() {
            let m = slot.get_or_init(|| HeaderMemo {
                segment: segment.into(),
                header: header.clone(),
                key: key.clone(),
            });
            if &*m.segment == segment {
                return;
            }
        }
    }
}

/// Verifies a compact JWT at `now` (unix seconds): [`UnverifiedToken::parse_known`]
/// with `keys` and the policy's length bound, then [`UnverifiedToken::verify`].
pub fn verify_jwt(
    token: &str,
    keys: &KeySet,
    policy: &Validation,
    now: i64,
) -> Result<VerifiedToken, Error> {
    UnverifiedToken::parse_known(token, policy.max_token_len, [keys])?.verify(keys, policy, now)
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
    use crate::{b64, Algorithm, ClaimsError, PrivateKey};

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
        assert_eq!(one.find(None).unwrap().as_ref(), &keys[0]);
    }

    #[test]
    fn keys_left_out_refuse_their_tokens_by_algorithm() {
        use crate::{sign_jwt, LocalSigner, TokenSigner};
        let now = 1_700_000_000;
        let claims = serde_json::json!({"iss": "i", "sub": "s", "exp": now + 60});
        let es = LocalSigner::new(
            PrivateKey::generate(Algorithm::ES256, None).unwrap(),
            Some("es".into()),
        );
        let pq = LocalSigner::new(
            PrivateKey::generate(Algorithm::MlDsa65, None).unwrap(),
            Some("pq".into()),
        );
        let mut keys = KeySet::new();
        keys.insert(Some("es".into()), es.public_jwk().key).unwrap();
        keys.insert_not_accepted("pq".into(), Algorithm::MlDsa65)
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.kids().collect::<Vec<_>>(), ["es"]);
        assert!(keys.get("pq").is_none());
        // Either way round, a kid is in the set once.
        assert_eq!(
            keys.insert(Some("pq".into()), pq.public_jwk().key),
            Err(KeyError::DuplicateKid("pq".into()))
        );
        assert_eq!(
            keys.insert_not_accepted("es".into(), Algorithm::ES256),
            Err(KeyError::DuplicateKid("es".into()))
        );
        let policy = Validation {
            algorithms: Algorithm::ALL.to_vec(),
            ..Validation::default()
        };
        let t = sign_jwt(&es, None, &claims).unwrap();
        verify_jwt(&t, &keys, &policy, now).unwrap();
        // Even a policy that names ML-DSA does not bring the left-out key back.
        let t = sign_jwt(&pq, None, &claims).unwrap();
        assert_eq!(
            verify_jwt(&t, &keys, &policy, now).unwrap_err(),
            Error::Token(TokenError::AlgorithmNotAllowed("ML-DSA-65"))
        );
        let other = LocalSigner::new(
            PrivateKey::generate(Algorithm::MlDsa65, None).unwrap(),
            Some("other".into()),
        );
        let t = sign_jwt(&other, None, &claims).unwrap();
        assert_eq!(
            verify_jwt(&t, &keys, &policy, now).unwrap_err(),
            Error::Token(TokenError::UnknownKid("other".into()))
        );
    }

    fn header_of(token: &str) -> &str {
        token.split('.').next().unwrap()
    }

    #[test]
    fn remembered_headers_change_no_answer() {
        use crate::{sign_jwt, LocalSigner, TokenSigner};
        let now = 1_700_000_000;
        let claims = serde_json::json!({"iss": "i", "sub": "s", "exp": now + 60});
        let signer = |kid: Option<&str>| {
            LocalSigner::new(
                PrivateKey::generate(Algorithm::ES256, None).unwrap(),
                kid.map(str::to_owned),
            )
        };
        let a = signer(Some("a"));
        let mut keys = KeySet::new();
        keys.insert(Some("a".into()), a.public_jwk().key).unwrap();
        let policy = Validation {
            required_typ: Some("at+jwt".into()),
            ..Validation::default()
        };
        let t = sign_jwt(&a, Some("at+jwt"), &claims).unwrap();

        // A well-signed token refused for its typ (an ID token from the same
        // key) is not remembered either.
        let id_token = sign_jwt(&a, Some("JWT"), &claims).unwrap();
        assert_eq!(
            verify_jwt(&id_token, &keys, &policy, now).unwrap_err(),
            Error::Claims(ClaimsError::WrongType(Some("JWT".into()), "at+jwt".into()))
        );
        assert!(keys.remembered(header_of(&id_token), None).is_none());

        // A forged signature under a header never seen is not remembered.
        let (head, _) = t.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", b64::encode(&[7u8; 64]));
        assert_eq!(
            verify_jwt(&forged, &keys, &policy, now).unwrap_err(),
            Error::Token(TokenError::BadSignature)
        );
        assert!(keys.remembered(header_of(&t), None).is_none());

        // Verified once: remembered; the second answer is the same.
        let read = UnverifiedToken::parse(&t, 8192).unwrap();
        assert!(!keys.remembers(&read));
        let first = verify_jwt(&t, &keys, &policy, now).unwrap();
        assert!(keys.remembered(header_of(&t), None).is_some());
        assert!(keys.remembers(&read));
        let second = verify_jwt(&t, &keys, &policy, now).unwrap();
        assert!(Arc::ptr_eq(&first.header, &second.header), "memo used");
        assert_eq!(first.claims, second.claims);

        // The remembered header still meets every policy check.
        let es_not_allowed = Validation {
            algorithms: vec![Algorithm::EdDSA],
            ..policy.clone()
        };
        assert!(matches!(
            verify_jwt(&t, &keys, &es_not_allowed, now),
            Err(Error::Token(TokenError::AlgorithmNotAllowed(_)))
        ));
        let other_typ = Validation {
            required_typ: Some("jwt".into()),
            ..policy.clone()
        };
        assert!(matches!(
            verify_jwt(&t, &keys, &other_typ, now),
            Err(Error::Claims(ClaimsError::WrongType(..)))
        ));
        // A forged signature under the remembered header is still refused.
        assert!(matches!(
            verify_jwt(&forged, &keys, &policy, now),
            Err(Error::Token(TokenError::BadSignature))
        ));

        // More distinct headers than slots: every one still verifies; the
        // first ones fill the slots and the rest are read each time.
        let typs = ["AT+JWT", "application/at+jwt", "At+Jwt", "at+JWT", "AT+jwt"];
        for typ in typs {
            let t = sign_jwt(&a, Some(typ), &claims).unwrap();
            for _ in 0..2 {
                verify_jwt(&t, &keys, &policy, now).unwrap();
            }
        }
        let remembered = |typ| {
            let t = sign_jwt(&a, Some(typ), &claims).unwrap();
            keys.remembered(header_of(&t), None).is_some()
        };
        assert!(remembered("at+jwt"));
        assert!(typs[..MEMO_SLOTS - 1].iter().all(|t| remembered(t)));
        assert!(!remembered(typs[MEMO_SLOTS - 1]));

        // A kid-less header chose the only key; after a second key joins,
        // the same token has no key to choose.
        let lone = signer(None);
        let mut one = KeySet::new();
        one.insert(None, lone.public_jwk().key).unwrap();
        let input = format!(
            "{}.{}",
            b64::encode(br#"{"alg":"ES256","typ":"at+jwt"}"#),
            b64::encode(claims.to_string().as_bytes())
        );
        let sig = lone.sign(input.as_bytes()).unwrap();
        let t = format!("{input}.{}", b64::encode(&sig));
        verify_jwt(&t, &one, &policy, now).unwrap();
        assert!(one.remembered(header_of(&t), None).is_some());
        one.insert(Some("a".into()), a.public_jwk().key).unwrap();
        assert!(one.remembered(header_of(&t), None).is_none());
        assert!(matches!(
            verify_jwt(&t, &one, &policy, now),
            Err(Error::Token(TokenError::MissingKid))
        ));
    }
}
