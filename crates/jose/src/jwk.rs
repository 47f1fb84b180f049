//! JSON Web Keys and key sets (RFC 7517, RFC 7518 §6, RFC 8037, and RFC 9964
//! `AKP` keys for ML-DSA) for public signature keys, and RFC 7638 thumbprints.
//!
//! Parsing is strict: unique member names, canonical base64url, `use` (if
//! present) must be `sig`, `key_ops` (if present) must allow `verify`,
//! private members are refused, `alg` must agree with the key type and curve
//! (and is required for `AKP` keys), and every key-strength rule of
//! [`PublicKey::from_material`] applies. Private JWKs are read only for `AKP`
//! keys ([`PrivateKey::from_jwk`]), whose `priv` is the 32-byte seed.

use std::collections::HashSet;

use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::alg::{Algorithm, Curve, KeyFamily};
use crate::b64;
use crate::crypto::sha256;
use crate::error::KeyError;
use crate::json::{parse_object, short, DeepDuplicate, ObjectError};
use crate::key::{PrivateKey, PublicKey, PublicMaterial};

const PRIVATE_MEMBERS: [&str; 9] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

/// A public signature key as a JWK: key, algorithm, optional `kid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub key: PublicKey,
}

impl Jwk {
    /// A JWK for `key` with `kid`.
    pub fn new(key: PublicKey, kid: Option<String>) -> Self {
        Jwk { kid, key }
    }

    /// The key's one algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    /// Parses one public JWK. An RSA JWK without `alg` is taken as
    /// `rsa_default` (most issuers omit `alg` and mean RS256); EC and OKP keys
    /// take their algorithm from the curve.
    pub fn parse(json: &[u8], rsa_default: Algorithm) -> Result<Self, KeyError> {
        let map = parse_object(json).map_err(|e| match e {
            ObjectError::Json(m) => KeyError::Malformed(format!("JWK is not a JSON object: {m}")),
            ObjectError::Duplicate(d) => KeyError::Malformed(format!("duplicate JWK member {d:?}")),
        })?;
        Jwk::from_map(&map, rsa_default)
    }

    /// Reads a JWK from an already parsed JSON object.
    pub fn from_map(map: &Map<String, Value>, rsa_default: Algorithm) -> Result<Self, KeyError> {
        let s = |name: &str| -> Result<Option<&str>, KeyError> {
            match map.get(name) {
                None => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.as_str())),
                Some(_) => Err(KeyError::Malformed(format!(
                    "JWK member {name:?} must be a string"
                ))),
            }
        };
        let bytes = |name: &str| -> Result<Vec<u8>, KeyError> {
            let v = s(name)?
                .ok_or_else(|| KeyError::Malformed(format!("JWK member {name:?} is missing")))?;
            b64::decode(v).ok_or_else(|| {
                KeyError::Malformed(format!("JWK member {name:?} is not canonical base64url"))
            })
        };
        if PRIVATE_MEMBERS.iter().any(|m| map.contains_key(*m)) {
            return Err(KeyError::PrivateMembers);
        }
        let kty = match (s("kty")?, map.get("keys")) {
            (Some(kty), _) => kty,
            (None, Some(Value::Array(keys))) => return Err(KeyError::IsKeySet(keys.len())),
            (None, _) => return Err(KeyError::Malformed("JWK member \"kty\" is missing".into())),
        };
        if let Some(u) = s("use")? {
            if u != "sig" {
                return Err(KeyError::WrongUse(u.chars().take(16).collect()));
            }
        }
        if let Some(ops) = map.get("key_ops") {
            let ops = ops
                .as_array()
                .filter(|a| a.iter().all(Value::is_string))
                .ok_or_else(|| {
                    KeyError::Malformed("JWK member \"key_ops\" must be an array of strings".into())
                })?;
            if !ops.iter().any(|o| o == "verify") {
                return Err(KeyError::WrongUse("key_ops without verify".into()));
            }
        }
        let kid = s("kid")?.map(str::to_owned);
        let alg = s("alg")?.map(Algorithm::from_name).transpose()?;
        let (material, implied) = match kty {
            "RSA" => (
                PublicMaterial::Rsa {
                    n: bytes("n")?,
                    e: bytes("e")?,
                },
                rsa_default,
            ),
            "EC" => {
                let curve = Curve::from_name(s("crv")?.unwrap_or(""))?;
                let implied = match curve {
                    Curve::P256 => Algorithm::ES256,
                    Curve::P384 => Algorithm::ES384,
                    Curve::P521 => Algorithm::ES512,
                };
                (
                    PublicMaterial::Ec {
                        curve,
                        x: bytes("x")?,
                        y: bytes("y")?,
                    },
                    implied,
                )
            }
            // RFC 9964 §3: `alg` is required and fixes what `pub` holds.
            "AKP" => {
                let alg = alg.ok_or(KeyError::AkpMissingAlgorithm)?;
                let KeyFamily::MlDsa(params) = alg.family() else {
                    return Err(KeyError::AlgorithmMismatch {
                        key: "AKP".into(),
                        alg: alg.name(),
                    });
                };
                (
                    PublicMaterial::MlDsa {
                        params,
                        public: bytes("pub")?,
                    },
                    alg,
                )
            }
            "OKP" => match s("crv")? {
                Some("Ed25519") => (PublicMaterial::Ed25519 { x: bytes("x")? }, Algorithm::EdDSA),
                other => {
                    return Err(KeyError::UnsupportedOkpCurve(
                        other.unwrap_or("").chars().take(16).collect(),
                    ))
                }
            },
            other => {
                return Err(KeyError::UnsupportedKeyType(
                    other.chars().take(16).collect(),
                ))
            }
        };
        let alg = alg.unwrap_or(implied);
        if alg.family() != material.family() {
            return Err(KeyError::AlgorithmMismatch {
                key: kty.to_string() + material_curve(&material),
                alg: alg.name(),
            });
        }
        Ok(Jwk {
            kid,
            key: PublicKey::from_material(alg, material)?,
        })
    }

    /// The JWK as a JSON object: `kty`, `use: sig`, `alg`, `kid` and the key's
    /// public members.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in required_members(self.key.material()) {
            m.insert(k.to_string(), Value::String(v));
        }
        m.insert("use".into(), json!("sig"));
        m.insert("alg".into(), json!(self.key.algorithm().name()));
        if let Some(kid) = &self.kid {
            m.insert("kid".into(), json!(kid));
        }
        Value::Object(m)
    }

    /// Compact JSON text of [`Jwk::to_value`].
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

fn material_curve(m: &PublicMaterial) -> &'static str {
    match m {
        PublicMaterial::Ec { curve, .. } => match curve {
            Curve::P256 => " P-256",
            Curve::P384 => " P-384",
            Curve::P521 => " P-521",
        },
        _ => "",
    }
}

/// The RFC 7638 required members, in lexicographic order. For `AKP` keys
/// they are `alg`, `kty`, `pub`, as the "AKP Thumbprints" section of RFC 9964
/// (§6 of draft-ietf-cose-dilithium-11, the text published as RFC 9964) says.
fn required_members(m: &PublicMaterial) -> Vec<(&'static str, String)> {
    match m {
        PublicMaterial::Rsa { n, e } => vec![
            ("e", b64::encode(e)),
            ("kty", "RSA".into()),
            ("n", b64::encode(n)),
        ],
        PublicMaterial::Ec { curve, x, y } => vec![
            ("crv", curve.name().into()),
            ("kty", "EC".into()),
            ("x", b64::encode(x)),
            ("y", b64::encode(y)),
        ],
        PublicMaterial::Ed25519 { x } => vec![
            ("crv", "Ed25519".into()),
            ("kty", "OKP".into()),
            ("x", b64::encode(x)),
        ],
        PublicMaterial::MlDsa { params, public } => vec![
            ("alg", params.name().into()),
            ("kty", "AKP".into()),
            ("pub", b64::encode(public)),
        ],
    }
}

impl PublicKey {
    /// The RFC 7638 JWK thumbprint (SHA-256, base64url). keyward uses it as
    /// the default `kid`.
    pub fn thumbprint(&self) -> String {
        let members = required_members(self.material());
        let mut s = String::from("{");
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            // Member values are base64url or fixed names: no JSON escaping needed.
            s.push_str(&format!("\"{k}\":\"{v}\""));
        }
        s.push('}');
        b64::encode(&sha256(s.as_bytes()))
    }

    /// This key as a JWK with `kid`.
    pub fn to_jwk(&self, kid: Option<String>) -> Jwk {
        Jwk::new(self.clone(), kid)
    }
}

impl PrivateKey {
    /// Reads a private `AKP` JWK (RFC 9964 §3-4): `alg` (required, an ML-DSA
    /// algorithm), `pub` and `priv`, the 32-byte seed, which must derive
    /// `pub`. Every public-JWK rule applies to the rest; `key_ops`, if
    /// present, must allow `sign`. Only AKP private JWKs are read here.
    pub fn from_jwk(json: &[u8]) -> Result<PrivateKey, KeyError> {
        let mut map = parse_object(json).map_err(|e| match e {
            ObjectError::Json(m) => KeyError::Malformed(format!("JWK is not a JSON object: {m}")),
            ObjectError::Duplicate(d) => KeyError::Malformed(format!("duplicate JWK member {d:?}")),
        })?;
        match map.get("kty") {
            Some(Value::String(k)) if k == "AKP" => {}
            Some(Value::String(k)) => {
                return Err(KeyError::UnsupportedKeyType(format!(
                    "{} (private JWKs are read for AKP keys only)",
                    k.chars().take(16).collect::<String>()
                )))
            }
            _ => return Err(KeyError::Malformed("JWK member \"kty\" is missing".into())),
        }
        let seed = match map.remove("priv") {
            Some(Value::String(v)) => {
                let v = Zeroizing::new(v);
                Zeroizing::new(b64::decode(&v).ok_or_else(|| {
                    KeyError::Malformed("JWK member \"priv\" is not canonical base64url".into())
                })?)
            }
            Some(_) => {
                return Err(KeyError::Malformed(
                    "JWK member \"priv\" must be a string".into(),
                ))
            }
            None => return Err(KeyError::Malformed("JWK member \"priv\" is missing".into())),
        };
        if let Some(ops) = map.remove("key_ops") {
            let ops = ops.as_array().filter(|a| a.iter().all(Value::is_string));
            match ops {
                Some(ops) if ops.iter().any(|o| o == "sign") => {}
                Some(_) => return Err(KeyError::WrongUse("key_ops without sign".into())),
                None => {
                    return Err(KeyError::Malformed(
                        "JWK member \"key_ops\" must be an array of strings".into(),
                    ))
                }
            }
        }
        let public = Jwk::from_map(&map, Algorithm::RS256)?.key;
        let key = PrivateKey::from_seed(public.algorithm(), &seed)?;
        if key.public_key() != &public {
            return Err(KeyError::SeedMismatch);
        }
        Ok(key)
    }
}

/// A key that [`JwkSet::parse_lenient`] dropped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedKey {
    pub index: usize,
    pub kid: Option<String>,
    pub error: KeyError,
}

/// A JWK Set (RFC 7517 §5) of public signature keys with unique `kid`s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Parses a set strictly: every key must load and `kid`s must be unique.
    pub fn parse(json: &[u8], rsa_default: Algorithm) -> Result<Self, KeyError> {
        let (set, rejected) = JwkSet::parse_lenient(json, rsa_default)?;
        match rejected.into_iter().next() {
            Some(r) => Err(r.error),
            None => Ok(set),
        }
    }

    /// Parses a set, dropping (and reporting) keys that fail to load and every
    /// key whose `kid` appears more than once; the rest are returned. Fails
    /// only if the document is not a JWK Set at all.
    pub fn parse_lenient(
        json: &[u8],
        rsa_default: Algorithm,
    ) -> Result<(Self, Vec<RejectedKey>), KeyError> {
        let map = parse_object(json).map_err(|e| match e {
            ObjectError::Json(m) => {
                KeyError::Malformed(format!("JWK Set is not a JSON object: {m}"))
            }
            ObjectError::Duplicate(d) => {
                KeyError::Malformed(format!("duplicate JWK Set member {d:?}"))
            }
        })?;
        let keys = map
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeyError::Malformed("JWK Set needs a \"keys\" array".into()))?;
        // `keys` was read as `Value`s, which keep the last of repeated names:
        // read the entries again to find names repeated inside each one.
        #[derive(serde::Deserialize)]
        struct Entries {
            keys: Vec<DeepDuplicate>,
        }
        let nested_dups = serde_json::from_slice::<Entries>(json)
            .map_err(|e| KeyError::Malformed(format!("JWK Set is malformed: {}", short(&e))))?
            .keys;
        let mut seen = HashSet::new();
        let mut dup = HashSet::new();
        for k in keys {
            if let Some(kid) = k.get("kid").and_then(Value::as_str) {
                if !seen.insert(kid) {
                    dup.insert(kid.to_string());
                }
            }
        }
        let mut out = JwkSet::default();
        let mut rejected = Vec::new();
        for (index, k) in keys.iter().enumerate() {
            let kid = k.get("kid").and_then(Value::as_str).map(str::to_owned);
            let result = match k {
                Value::Object(_) if nested_dups.get(index).is_some_and(|d| d.0.is_some()) => {
                    let d = nested_dups[index].0.as_deref().unwrap_or_default();
                    Err(KeyError::Malformed(format!("duplicate JWK member {d:?}")))
                }
                Value::Object(m) => {
                    let raw = serde_json::to_vec(m).unwrap_or_default();
                    Jwk::parse(&raw, rsa_default).and_then(|j| {
                        if kid.as_ref().is_some_and(|kid| dup.contains(kid)) {
                            Err(KeyError::DuplicateKid(kid.clone().unwrap_or_default()))
                        } else {
                            Ok(j)
                        }
                    })
                }
                _ => Err(KeyError::Malformed("JWK Set entry is not an object".into())),
            };
            match result {
                Ok(j) => out.keys.push(j),
                Err(error) => rejected.push(RejectedKey { index, kid, error }),
            }
        }
        Ok((out, rejected))
    }

    /// The set as JSON: `{"keys":[...]}`.
    pub fn to_value(&self) -> Value {
        json!({ "keys": self.keys.iter().map(Jwk::to_value).collect::<Vec<_>>() })
    }

    /// Compact JSON text.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The key with `kid`.
    pub fn get(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

impl KeyFamily {
    /// The JWK `kty` of this family.
    pub fn kty(self) -> &'static str {
        match self {
            KeyFamily::Rsa => "RSA",
            KeyFamily::Ec(_) => "EC",
            KeyFamily::Ed25519 => "OKP",
            KeyFamily::MlDsa(_) => "AKP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1: the example RSA key and its thumbprint.
        let jwk = br#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#;
        let k = Jwk::parse(jwk, Algorithm::RS256).unwrap();
        assert_eq!(
            k.key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(k.kid.as_deref(), Some("2011-04-29"));
    }

    #[test]
    fn round_trip_every_algorithm() {
        for alg in Algorithm::ALL {
            let bits = matches!(alg.family(), KeyFamily::Rsa).then_some(2048);
            let k = PrivateKey::generate(alg, bits).unwrap();
            let jwk = k.public_key().to_jwk(Some("k1".into()));
            let again = Jwk::parse(jwk.to_json().as_bytes(), Algorithm::RS256).unwrap();
            assert_eq!(again, jwk);
            assert_eq!(again.to_value()["use"], "sig");
        }
    }

    #[test]
    fn refusals() {
        let k = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        let mut v = k.public_key().to_jwk(Some("a".into())).to_value();
        let parse = |v: &Value| Jwk::parse(v.to_string().as_bytes(), Algorithm::RS256);
        assert!(parse(&v).is_ok());
        let mut w = v.clone();
        w["d"] = json!("AAAA");
        assert_eq!(parse(&w), Err(KeyError::PrivateMembers));
        let mut w = v.clone();
        w["use"] = json!("enc");
        assert!(matches!(parse(&w), Err(KeyError::WrongUse(_))));
        let mut w = v.clone();
        w["alg"] = json!("ES384");
        assert!(
            matches!(parse(&w), Err(KeyError::AlgorithmMismatch { .. })),
            "ES384 with a P-256 point"
        );
        let mut w = v.clone();
        w["alg"] = json!("HS256");
        assert!(matches!(parse(&w), Err(KeyError::UnsupportedAlgorithm(_))));
        let mut w = v.clone();
        w["kty"] = json!("oct");
        assert!(matches!(parse(&w), Err(KeyError::UnsupportedKeyType(_))));
        let mut w = v.clone();
        w["x"] = json!(format!("{}=", w["x"].as_str().unwrap()));
        assert!(matches!(parse(&w), Err(KeyError::Malformed(_))));
        v["kid"] = json!(5);
        assert!(matches!(parse(&v), Err(KeyError::Malformed(_))));
        assert_eq!(
            Jwk::parse(br#"{"kty":"EC","kty":"EC"}"#, Algorithm::RS256).unwrap_err(),
            KeyError::Malformed(r#"duplicate JWK member "kty""#.into())
        );
    }

    #[test]
    fn misleading_inputs_get_precise_errors() {
        let k = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        let one = k.public_key().to_jwk(Some("a".into())).to_value();
        let set = json!({"keys": [one, one]}).to_string();
        let e = Jwk::parse(set.as_bytes(), Algorithm::RS256).unwrap_err();
        assert_eq!(e, KeyError::IsKeySet(2));
        assert!(e
            .to_string()
            .contains("JWK Set of 2 key(s), not a single JWK"));
        let x25519 =
            br#"{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}"#;
        let e = Jwk::parse(x25519, Algorithm::RS256).unwrap_err();
        assert_eq!(e, KeyError::UnsupportedOkpCurve("X25519".into()));
        let m = e.to_string();
        assert!(m.contains("only Ed25519") && !m.contains("P-256"), "{m}");
        // An EC key on an unknown curve still lists the P-curves.
        let e = Jwk::parse(br#"{"kty":"EC","crv":"P-192"}"#, Algorithm::RS256).unwrap_err();
        assert_eq!(e, KeyError::UnsupportedCurve("P-192".into()));
        assert!(e.to_string().contains("P-256 P-384 P-521"));
    }

    #[test]
    fn sets_strict_and_lenient() {
        let a = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        let b = PrivateKey::generate(Algorithm::EdDSA, None).unwrap();
        let set = JwkSet {
            keys: vec![
                a.public_key().to_jwk(Some("a".into())),
                b.public_key().to_jwk(Some("b".into())),
            ],
        };
        let again = JwkSet::parse(set.to_json().as_bytes(), Algorithm::RS256).unwrap();
        assert_eq!(again, set);
        let dup = JwkSet {
            keys: vec![
                a.public_key().to_jwk(Some("a".into())),
                b.public_key().to_jwk(Some("a".into())),
            ],
        };
        assert!(matches!(
            JwkSet::parse(dup.to_json().as_bytes(), Algorithm::RS256),
            Err(KeyError::DuplicateKid(_))
        ));
        let mut v = set.to_value();
        v["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty":"oct","k":"AAAA","kid":"h"}));
        let (ok, rejected) =
            JwkSet::parse_lenient(v.to_string().as_bytes(), Algorithm::RS256).unwrap();
        assert_eq!(ok.keys.len(), 2);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].index, 2);
        assert_eq!(
            JwkSet::parse(b"{\"keys\":3}", Algorithm::RS256).unwrap_err(),
            KeyError::Malformed("JWK Set needs a \"keys\" array".into())
        );
    }
}
