//! A token's life: read once ([`UnverifiedToken`]), then verified
//! ([`UnverifiedToken::verify`] gives a [`VerifiedToken`]).
//!
//! Reading splits a compact JWT once and reads its header once, strictly
//! (DESIGN.md rule 1: a bounded length, exactly three segments, canonical
//! unpadded base64url, a JSON object with unique member names, an `alg`
//! that can be named, no `crit` entry). Nothing read is trusted before
//! [`UnverifiedToken::verify`]: a caller may use `kid()` and `alg()` to find
//! keys, and [`crate::dangerous::peek_names`] to choose whose keys and policy
//! verify the token, never to decide anything else.

use std::fmt;
use std::sync::Arc;

use crate::alg::Algorithm;
use crate::b64;
use crate::claims::{Claims, Validation};
use crate::error::{Error, TokenError};
use crate::jws::{check_signature, decode_header, split, Header, Parts};
use crate::verifier::KeySet;

/// A compact JWT split and its header read, not verified.
///
/// Its `Debug` output shows the header only: a token is a credential.
#[derive(Clone)]
pub struct UnverifiedToken<'t> {
    token: &'t str,
    parts: Parts<'t>,
    header: Arc<Header>,
}

/// A token whose signature and claims passed.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    pub header: Arc<Header>,
    pub claims: Claims,
}

impl fmt::Debug for UnverifiedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedToken")
            .field("header", &self.header)
            .field("len", &self.token.len())
            .finish_non_exhaustive()
    }
}

impl<'t> UnverifiedToken<'t> {
    /// Reads `token`: at most `max_len` bytes, three segments, and a header
    /// that passes every rule of DESIGN.md rule 1 that a header alone can
    /// be held to. The signature segment and the payload are not decoded.
    ///
    /// `max_len` bounds the work done before any policy is chosen; when the
    /// policy is known, pass its [`Validation::max_token_len`]. Where it is
    /// not (several issuers, each with its own policy), pass the largest
    /// bound among them: [`UnverifiedToken::verify`] holds the token to its
    /// own policy's bound again.
    pub fn parse(token: &'t str, max_len: usize) -> Result<Self, Error> {
        Self::parse_known(token, max_len, [])
    }

    /// [`UnverifiedToken::parse`], except that a header whose exact bytes
    /// one of `sets` has already verified is not decoded again: that set's
    /// reading of it is used, which is the reading `parse` would give (the
    /// same bytes always read the same, and only a header that passed
    /// reading, a signature check and the claims is remembered).
    pub fn parse_known<'k>(
        token: &'t str,
        max_len: usize,
        sets: impl IntoIterator<Item = &'k KeySet>,
    ) -> Result<Self, Error> {
        let parts = split(token, max_len)?;
        let known = sets
            .into_iter()
            .find_map(|s| s.remembered(parts.header_b64, None));
        let header = match known {
            Some(m) => m.header.clone(),
            None => Arc::new(decode_header(parts.header_b64)?),
        };
        Ok(UnverifiedToken {
            token,
            parts,
            header,
        })
    }

    /// The token's whole text, as given to [`UnverifiedToken::parse`].
    pub fn text(&self) -> &'t str {
        self.token
    }

    /// The header's `kid`, not verified: for finding a key.
    pub fn kid(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }

    /// The header's `alg`, not verified: one that can be named (never
    /// `none` or `HS*`), though perhaps not one a policy allows.
    pub fn alg(&self) -> Algorithm {
        self.header.alg
    }

    /// The whole header as read.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header segment, as sent.
    pub(crate) fn header_segment(&self) -> &'t str {
        self.parts.header_b64
    }

    /// The payload's bytes: canonical base64url, decoded (not yet read).
    pub(crate) fn payload_bytes(&self) -> Result<Vec<u8>, TokenError> {
        b64::decode(self.parts.payload_b64).ok_or(TokenError::Base64("payload"))
    }

    /// Verifies the token at `now` (unix seconds) with `keys` and `policy`:
    /// the policy's length bound, the key the `kid` names, the algorithm
    /// (allowed, and the key's one), the signature, the header `typ`, then
    /// the payload's claims. The payload is decoded and read here, once.
    ///
    /// A header that passed everything is remembered by `keys` (in one of a
    /// few slots), so that the next token with the same header bytes is
    /// neither decoded nor matched to its key again
    /// ([`UnverifiedToken::parse_known`]).
    pub fn verify(
        &self,
        keys: &KeySet,
        policy: &Validation,
        now: i64,
    ) -> Result<VerifiedToken, Error> {
        if self.token.len() > policy.max_token_len {
            return Err(TokenError::TooLong(policy.max_token_len).into());
        }
        let segment = self.header_segment();
        let remembered = keys.remembered(segment, Some(&self.header));
        let key = match remembered {
            Some(m) => &m.key,
            None => keys.find(self.kid())?,
        };
        check_signature(&self.parts, &self.header, key, &policy.algorithms)?;
        policy.check_typ(self.header.typ.as_deref())?;
        let claims = Claims::parse_keeping(
            self.payload_bytes()?,
            &policy.required_claims,
            policy.keep_claims,
        )?;
        policy.check_claims(&claims, now)?;
        // Remembered only once the whole token has passed: a token refused
        // for its typ or claims (an ID token signed by the same key) takes
        // no slot, and neither does a forgery.
        if remembered.is_none() {
            keys.remember(segment, &self.header, key);
        }
        Ok(VerifiedToken {
            header: self.header.clone(),
            claims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sign_jwt, ClaimsError, LocalSigner, PrivateKey, TokenSigner};

    const NOW: i64 = 1_700_000_000;

    fn signer(kid: &str) -> LocalSigner {
        LocalSigner::new(
            PrivateKey::generate(Algorithm::ES256, None).unwrap(),
            Some(kid.into()),
        )
    }

    fn keys_of(signers: &[&LocalSigner]) -> KeySet {
        let mut keys = KeySet::new();
        for s in signers {
            let jwk = s.public_jwk();
            keys.insert(jwk.kid, jwk.key).unwrap();
        }
        keys
    }

    fn token(s: &LocalSigner) -> String {
        let claims = serde_json::json!({"iss": "i", "sub": "s", "exp": NOW + 60});
        sign_jwt(s, Some("at+jwt"), &claims).unwrap()
    }

    #[test]
    fn read_once_then_verified_with_any_set() {
        let (a, b) = (signer("a"), signer("b"));
        let t = token(&a);
        let read = UnverifiedToken::parse(&t, 8192).unwrap();
        assert_eq!((read.kid(), read.alg()), (Some("a"), Algorithm::ES256));
        assert_eq!(read.header().typ.as_deref(), Some("at+jwt"));
        assert!(!format!("{read:?}").contains(&t[t.len() - 20..]));

        // The same reading is verified against several sets: the first has
        // no key "a", the second does.
        let policy = Validation::default();
        assert_eq!(
            read.verify(&keys_of(&[&b]), &policy, NOW).unwrap_err(),
            Error::Token(TokenError::UnknownKid("a".into()))
        );
        let ok = read.verify(&keys_of(&[&a, &b]), &policy, NOW).unwrap();
        assert_eq!(ok.claims.sub(), Some("s"));
        assert!(Arc::ptr_eq(&ok.header, &read.header));
    }

    #[test]
    fn the_length_bound_is_the_policys_again_at_verification() {
        let a = signer("a");
        let t = token(&a);
        assert_eq!(
            UnverifiedToken::parse(&t, t.len() - 1).unwrap_err(),
            Error::Token(TokenError::TooLong(t.len() - 1))
        );
        // Read under a looser bound (several issuers), verified under a
        // policy whose bound it exceeds: refused as too long, before any
        // key is looked for.
        let read = UnverifiedToken::parse(&t, 8192).unwrap();
        let tight = Validation {
            max_token_len: t.len() - 1,
            ..Validation::default()
        };
        assert_eq!(
            read.verify(&KeySet::new(), &tight, NOW).unwrap_err(),
            Error::Token(TokenError::TooLong(t.len() - 1))
        );
        let exact = Validation {
            max_token_len: t.len(),
            ..Validation::default()
        };
        read.verify(&keys_of(&[&a]), &exact, NOW).unwrap();
    }

    #[test]
    fn a_known_header_is_not_read_again_and_changes_no_answer() {
        let (a, b) = (signer("a"), signer("b"));
        let (ka, kb) = (keys_of(&[&a]), keys_of(&[&b]));
        let t = token(&a);
        let policy = Validation::default();
        // Not yet verified by any set: read from its bytes.
        let first = UnverifiedToken::parse_known(&t, 8192, [&kb, &ka]).unwrap();
        assert!(!ka.remembers(&first) && !kb.remembers(&first));
        first.verify(&ka, &policy, NOW).unwrap();
        assert!(ka.remembers(&first) && !kb.remembers(&first));
        // Now the reading of `ka` is reused, wherever `ka` is in the list.
        for sets in [[&kb, &ka], [&ka, &kb]] {
            let again = UnverifiedToken::parse_known(&t, 8192, sets).unwrap();
            assert!(Arc::ptr_eq(&again.header, &first.header));
            assert_eq!(again.header(), first.header());
        }
        // A token refused by its claims is not remembered.
        let expired = UnverifiedToken::parse(&t, 8192).unwrap();
        let kb2 = keys_of(&[&a]);
        assert_eq!(
            expired.verify(&kb2, &policy, NOW + 3600).unwrap_err(),
            Error::Claims(ClaimsError::Expired)
        );
        assert!(!kb2.remembers(&expired));
        // Bad input is refused at reading, known sets or not.
        let (h, rest) = t.split_once('.').unwrap();
        for (bad, want) in [
            (format!("{h}.{rest}.x"), TokenError::Segments),
            (format!("{h}=.{rest}"), TokenError::Base64("header")),
            (
                format!("{}.{rest}", b64::encode(br#"{"alg":"HS256"}"#)),
                TokenError::ForbiddenAlgorithm("HS256".into()),
            ),
        ] {
            assert_eq!(
                UnverifiedToken::parse_known(&bad, 8192, [&ka]).unwrap_err(),
                Error::Token(want)
            );
        }
        // A signature over the remembered header is still checked.
        let forged = format!(
            "{}.{}",
            t.rsplit_once('.').unwrap().0,
            b64::encode(&[7; 64])
        );
        let read = UnverifiedToken::parse_known(&forged, 8192, [&ka]).unwrap();
        assert!(ka.remembers(&read));
        assert_eq!(
            read.verify(&ka, &policy, NOW).unwrap_err(),
            Error::Token(TokenError::BadSignature)
        );
    }
}
