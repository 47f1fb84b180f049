//! JWS compact serialization (RFC 7515 §7.1), read strictly (DESIGN.md rule 1):
//! a bounded length, exactly three segments of canonical unpadded base64url, a
//! header that is a JSON object with unique member names, an allowed `alg`
//! equal to the key's one algorithm, no unknown `crit` entries. Header members
//! `jwk`, `jku`, `x5u` and `x5c` are never used to find a key.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::alg::{Algorithm, KeyFamily};
use crate::b64;
use crate::error::{KeyError, TokenError};
use crate::json::{short, Key, Names, Scalar};
use crate::key::PublicKey;

/// The default bound on a compact token's length, in bytes.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// The JOSE header members keyward reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub cty: Option<String>,
}

/// A compact JWS split into its segments; nothing decoded yet.
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub header_b64: &'a str,
    pub signing_input: &'a str,
    pub payload_b64: &'a str,
    pub signature_b64: &'a str,
}

/// Splits a compact JWS: bounded length, exactly three segments.
pub(crate) fn split(token: &str, max_len: usize) -> Result<Parts<'_>, TokenError> {
    if token.len() > max_len {
        return Err(TokenError::TooLong(max_len));
    }
    // Exactly two dots (memchr scans a word or a vector at a time).
    let b = token.as_bytes();
    let dots = memchr::memchr(b'.', b).and_then(|i| {
        let j = i + 1 + memchr::memchr(b'.', &b[i + 1..])?;
        memchr::memchr(b'.', &b[j + 1..])
            .is_none()
            .then_some((i, j))
    });
    let Some((i, j)) = dots else {
        return Err(TokenError::Segments);
    };
    Ok(Parts {
        header_b64: &token[..i],
        signing_input: &token[..j],
        payload_b64: &token[i + 1..j],
        signature_b64: &token[j + 1..],
    })
}

/// Decodes and reads the header segment.
pub(crate) fn decode_header(header_b64: &str) -> Result<Header, TokenError> {
    b64::with_decoded::<512, _>(header_b64, parse_header).ok_or(TokenError::Base64("header"))?
}

/// Reads a decoded header.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, TokenError> {
    // RFC 7515 §4: the header is UTF-8 JSON (checked whole, strings included).
    let text = std::str::from_utf8(bytes).map_err(|_| TokenError::Header("not UTF-8".into()))?;
    let raw: RawHeader<'_> =
        serde_json::from_str(text).map_err(|e| TokenError::Header(short(&e)))?;
    if let Some(d) = raw.duplicate {
        return Err(TokenError::DuplicateMember(d, "header"));
    }
    if let Some(p) = raw.problem {
        return Err(p);
    }
    let alg_name = raw
        .alg
        .ok_or_else(|| TokenError::Header("missing alg".into()))?;
    let alg = Algorithm::from_name(&alg_name)
        .map_err(|_| TokenError::ForbiddenAlgorithm(alg_name.chars().take(16).collect()))?;
    Ok(Header {
        alg,
        kid: raw.kid,
        typ: raw.typ,
        cty: raw.cty,
    })
}

struct RawHeader<'a> {
    alg: Option<Cow<'a, str>>,
    kid: Option<String>,
    typ: Option<String>,
    cty: Option<String>,
    duplicate: Option<String>,
    problem: Option<TokenError>,
}

impl<'de> Deserialize<'de> for RawHeader<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawHeader<'de>, A::Error> {
                let mut h = RawHeader {
                    alg: None,
                    kid: None,
                    typ: None,
                    cty: None,
                    duplicate: None,
                    problem: None,
                };
                let mut seen = Names::new();
                while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
                    if seen.contains(&k) {
                        h.duplicate
                            .get_or_insert_with(|| k.chars().take(32).collect());
                    }
                    let slot = match k.as_ref() {
                        "kid" => Some(&mut h.kid),
                        "typ" => Some(&mut h.typ),
                        "cty" => Some(&mut h.cty),
                        _ => None,
                    };
                    match slot {
                        Some(slot) => match m.next_value::<Scalar<'de>>()? {
                            Scalar::Str(v) => *slot = Some(v.into_owned()),
                            _ => {
                                h.problem.get_or_insert_with(|| {
                                    TokenError::Header(format!("{k} must be a string"))
                                });
                            }
                        },
                        None if k == "alg" => match m.next_value::<Scalar<'de>>()? {
                            Scalar::Str(v) => h.alg = Some(v),
                            _ => {
                                h.problem.get_or_insert_with(|| {
                                    TokenError::Header("alg must be a string".into())
                                });
                            }
                        },
                        None if k == "crit" => {
                            let v: serde_json::Value = m.next_value()?;
                            let p = match v.as_array() {
                                Some(a) if !a.is_empty() && a.iter().all(|x| x.is_string()) => {
                                    TokenError::UnknownCritical(
                                        a[0].as_str()
                                            .unwrap_or_default()
                                            .chars()
                                            .take(32)
                                            .collect(),
                                    )
                                }
                                _ => TokenError::MalformedCritical,
                            };
                            // No extension is understood, so any crit entry rejects the token.
                            h.problem.get_or_insert(p);
                        }
                        None => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                    seen.insert(k);
                }
                Ok(h)
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks the signature of split parts with `key`; the token's `alg` must be
/// allowed and equal to the key's algorithm.
pub(crate) fn check_signature(
    parts: &Parts<'_>,
    header: &Header,
    key: &PublicKey,
    allowed: &[Algorithm],
) -> Result<(), TokenError> {
    if !allowed.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed(header.alg.name()));
    }
    if header.alg != key.algorithm() {
        return Err(TokenError::AlgorithmKeyMismatch {
            token: header.alg.name(),
            key: key.algorithm().name(),
        });
    }
    // 1024 bytes on the stack: an RSA-8192 signature, the largest classical
    // one. ML-DSA signatures (2420 to 4627 bytes) are decoded into a `Vec`.
    b64::with_decoded::<1024, _>(parts.signature_b64, |sig| {
        key.verify(parts.signing_input.as_bytes(), sig)
    })
    .ok_or(TokenError::Base64("signature"))?
}

/// Verifies any compact JWS with one key and returns its header and payload
/// bytes (which need not be JSON): `keyward jws verify`.
pub fn verify_compact(
    token: &str,
    key: &PublicKey,
    max_len: usize,
) -> Result<(Header, Vec<u8>), TokenError> {
    let parts = split(token, max_len)?;
    let header = decode_header(parts.header_b64)?;
    check_signature(&parts, &header, key, &Algorithm::ALL)?;
    let payload = b64::decode(parts.payload_b64).ok_or(TokenError::Base64("payload"))?;
    Ok((header, payload))
}

/// The protected header a signer writes, `{"alg","kid","typ"}` (absent
/// members left out), JSON- and base64url-encoded: the first segment of
/// every token it signs.
pub(crate) fn encoded_header(alg: Algorithm, kid: Option<&str>, typ: Option<&str>) -> String {
    let mut m = serde_json::Map::new();
    m.insert("alg".into(), alg.name().into());
    if let Some(kid) = kid {
        m.insert("kid".into(), kid.into());
    }
    if let Some(typ) = typ {
        m.insert("typ".into(), typ.into());
    }
    b64::encode(serde_json::Value::Object(m).to_string().as_bytes())
}

/// The compact JWS (RFC 7515 §7.1) of `payload` under an encoded protected
/// header: `sign` receives the signing input and returns the signature of
/// `alg` (which sizes the output). The one place keyward assembles a JWS.
pub(crate) fn sign_compact(
    header_b64: &str,
    alg: Algorithm,
    payload: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, KeyError>,
) -> Result<String, KeyError> {
    let mut out = String::with_capacity(
        header_b64.len()
            + 2
            + b64::encoded_len(payload.len())
            + b64::encoded_len(signature_len_hint(alg)),
    );
    out.push_str(header_b64);
    out.push('.');
    b64::encode_into(payload, &mut out);
    let sig = sign(out.as_bytes())?;
    out.push('.');
    b64::encode_into(&sig, &mut out);
    Ok(out)
}

/// The length of a signature of `alg`, for sizing a token: exact but for
/// RSA, where it is that of a 4096-bit key (keyward's default).
pub(crate) fn signature_len_hint(alg: Algorithm) -> usize {
    match alg.family() {
        KeyFamily::Rsa => 512,
        KeyFamily::Ec(c) => 2 * c.coordinate_len(),
        KeyFamily::Ed25519 => 64,
        KeyFamily::MlDsa(p) => p.signature_len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(json: &str) -> Result<Header, TokenError> {
        parse_header(json.as_bytes())
    }

    #[test]
    fn header_rules() {
        assert_eq!(
            h(r#"{"alg":"ES256","kid":"k"}"#).unwrap().kid.as_deref(),
            Some("k")
        );
        assert!(matches!(
            h(r#"{"alg":"none"}"#),
            Err(TokenError::ForbiddenAlgorithm(_))
        ));
        assert!(matches!(
            h(r#"{"alg":"HS256"}"#),
            Err(TokenError::ForbiddenAlgorithm(_))
        ));
        assert!(matches!(
            h(r#"{"alg":"ES256","alg":"RS256"}"#),
            Err(TokenError::DuplicateMember(..))
        ));
        assert!(matches!(
            h(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#),
            Err(TokenError::UnknownCritical(_))
        ));
        assert!(matches!(
            h(r#"{"alg":"ES256","crit":[]}"#),
            Err(TokenError::MalformedCritical)
        ));
        assert!(matches!(
            h(r#"{"alg":"ES256","kid":7}"#),
            Err(TokenError::Header(_))
        ));
        assert!(matches!(h(r#"{"kid":"k"}"#), Err(TokenError::Header(_))));
        assert!(matches!(h(r#"["alg"]"#), Err(TokenError::Header(_))));
        assert!(h(
            r#"{"alg":"ES256","jku":"https://evil","jwk":{"kty":"EC"},"x5u":"u","x5c":["a"]}"#
        )
        .is_ok());
    }

    #[test]
    fn split_rules() {
        assert!(matches!(split("a.b", 100), Err(TokenError::Segments)));
        assert!(matches!(split("a.b.c.d", 100), Err(TokenError::Segments)));
        for bad in ["", "abc", ".", "a..b.c", "a.b.c.", "..."] {
            assert!(
                matches!(split(bad, 100), Err(TokenError::Segments)),
                "{bad}"
            );
        }
        assert!(matches!(
            split(&"a".repeat(101), 100),
            Err(TokenError::TooLong(100))
        ));
        assert!(matches!(
            decode_header(split("eyJ=.b.c", 100).unwrap().header_b64),
            Err(TokenError::Base64("header"))
        ));
    }
}
