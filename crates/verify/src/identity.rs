//! Who a verified token says the caller is.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use http::HeaderValue;

use keyward_jose::{claim_text, Claims};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::VerifyError;
use crate::permissions::Grants;

/// The caller, from a verified token.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: Option<String>,
    /// `client_id` (RFC 9068), else `azp`.
    pub client_id: Option<String>,
    /// The `scope` claim, split on spaces (RFC 8693 §4.2); or a `scp` array.
    pub scopes: Vec<String>,
    /// The `permissions` claim (an array of strings).
    pub permissions: Vec<String>,
    /// `jti`.
    pub jti: Option<String>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// The `kid` of the key that verified the token.
    pub kid: Option<String>,
    /// `cnf.jkt`: the thumbprint of the DPoP key the token is bound to
    /// (RFC 9449 §6). A bound token is only accepted with a proof by that key.
    pub cnf_jkt: Option<String>,
    /// `cnf.x5t#S256`: the thumbprint of the client certificate the token
    /// is bound to (RFC 8705 §3.1).
    pub cnf_x5t_s256: Option<String>,
    /// Whether this token's issuer policy lets a bare `*` grant cover
    /// every permission.
    pub allow_wildcard_all: bool,
    /// All claims.
    pub claims: Claims,
    /// The identity as header values, built on first use.
    header_values: OnceLock<HeaderValues>,
    /// `permissions` as grants, built on first use.
    permission_grants: OnceLock<Grants>,
    /// The scopes as grants, built on first use.
    scope_grants: OnceLock<Grants>,
    /// The SHA-256 of the token's text, for a token bound to a DPoP key:
    /// set by the gate as it verifies the token, so a cached token's proofs
    /// are checked against it without hashing the token again.
    token_sha256: Option<[u8; 32]>,
}

/// An identity as the values of the headers that forward it upstream, each
/// built once per verified token (a cached token reuses them on every
/// request). A claim that cannot be a header value holds the error that
/// refuses the request when that header is wanted.
#[derive(Clone, Debug)]
pub struct HeaderValues {
    /// `sub`, if present.
    pub subject: Option<Result<HeaderValue, VerifyError>>,
    /// The client, if known.
    pub client: Option<Result<HeaderValue, VerifyError>>,
    /// `iss`.
    pub issuer: Result<HeaderValue, VerifyError>,
    /// The scopes, space-separated; `None` when there are none.
    pub scopes: Option<Result<HeaderValue, VerifyError>>,
    /// The permissions, space-separated; `None` when there are none.
    pub permissions: Option<Result<HeaderValue, VerifyError>>,
}

impl HeaderValues {
    fn of(id: &Identity) -> HeaderValues {
        // The rule is keyward-jose's, the one keyward's issuer checks before
        // it mints: what passes it is always a valid header value.
        fn value(s: &str, claim: &'static str) -> Result<HeaderValue, VerifyError> {
            claim_text::check_value(s).map_err(|_| VerifyError::MalformedClaim(claim))?;
            HeaderValue::from_str(s)
                .or_else(|_| HeaderValue::from_bytes(s.as_bytes()))
                .map_err(|_| VerifyError::MalformedClaim(claim))
        }
        // Space-separated: an element holding whitespace would read as two
        // grants upstream, so such a token is refused rather than forwarded.
        fn joined(
            list: &[String],
            claim: &'static str,
        ) -> Option<Result<HeaderValue, VerifyError>> {
            if list.is_empty() {
                return None;
            }
            if list.iter().any(|e| claim_text::check_word(e).is_err()) {
                return Some(Err(VerifyError::MalformedClaim(claim)));
            }
            Some(
                HeaderValue::from_bytes(list.join(" ").as_bytes())
                    .map_err(|_| VerifyError::MalformedClaim(claim)),
            )
        }
        HeaderValues {
            subject: id.subject.as_deref().map(|v| value(v, "sub")),
            client: id.client_id.as_deref().map(|v| value(v, "client_id")),
            issuer: value(&id.issuer, "iss"),
            scopes: joined(&id.scopes, "scope"),
            permissions: joined(&id.permissions, "permissions"),
        }
    }
}

impl Identity {
    /// Reads the identity from verified claims. `permissions` and `scp`, when
    /// present, must be arrays of strings and `scope` a string; a wrong type
    /// rejects the token rather than granting nothing silently.
    pub fn from_claims(claims: Claims, kid: Option<String>) -> Result<Identity, VerifyError> {
        let extra = Extra::of(&claims)?;
        let issuer = claims.iss().unwrap_or_default().to_string();
        let subject = claims.sub().map(str::to_owned);
        let client_id = match (claims.client_id(), extra.azp) {
            (Some(c), _) => Some(c.to_string()),
            (None, Shape::Str(s)) => Some(s.to_string()),
            (None, Shape::Absent) => None,
            (None, _) => return Err(VerifyError::MalformedClaim("azp")),
        };
        // jose has already refused a `scope` that is not a string.
        let mut scopes: Vec<String> = claims
            .scope()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        match extra.scp {
            Shape::Absent => {}
            Shape::List(l) => scopes.extend(l.into_iter().map(String::from)),
            _ => return Err(VerifyError::MalformedClaim("scp")),
        }
        let permissions = match extra.permissions {
            Shape::Absent => Vec::new(),
            Shape::List(l) => l.into_iter().map(String::from).collect(),
            _ => return Err(VerifyError::MalformedClaim("permissions")),
        };
        let (cnf_jkt, cnf_x5t_s256) = match extra.cnf {
            Some(c) => (c.jkt, c.x5t_s256),
            None => (None, None),
        };
        let jti = claims.jti().map(str::to_owned);
        let expires_at = claims.expires_at().unwrap_or(i64::MAX);
        Ok(Identity {
            issuer,
            subject,
            client_id,
            scopes,
            permissions,
            jti,
            expires_at,
            kid,
            cnf_jkt,
            cnf_x5t_s256,
            allow_wildcard_all: false,
            claims,
            header_values: OnceLock::new(),
            permission_grants: OnceLock::new(),
            scope_grants: OnceLock::new(),
            token_sha256: None,
        })
    }

    /// The identity as header values, built from the fields on the first
    /// call and kept (a clone keeps them too): set the fields first.
    pub fn header_values(&self) -> &HeaderValues {
        self.header_values.get_or_init(|| HeaderValues::of(self))
    }

    /// The `permissions` claim as grants, a bare `*` covering everything
    /// when `allow_wildcard_all`; built on the first call and kept, like
    /// [`Identity::header_values`] (a cached token reuses them).
    pub fn permission_grants(&self) -> &Grants {
        self.permission_grants
            .get_or_init(|| Grants::new(&self.permissions, self.allow_wildcard_all))
    }

    /// The scopes (`scope` / `scp`) as grants; a bare `*` scope never covers
    /// everything (`allow_wildcard_all` is about permissions only). Built on
    /// the first call and kept.
    pub fn scope_grants(&self) -> &Grants {
        self.scope_grants
            .get_or_init(|| Grants::new(&self.scopes, false))
    }

    /// The SHA-256 of the text of the token this identity was verified
    /// from, when the gate kept it (a token bound to a DPoP key).
    pub(crate) fn token_sha256(&self) -> Option<&[u8; 32]> {
        self.token_sha256.as_ref()
    }

    /// Keeps the SHA-256 of `token`, the text this identity was just
    /// verified from.
    pub(crate) fn keep_token_sha256(&mut self, token: &str) {
        self.token_sha256 = Some(keyward_jose::crypto::sha256(token.as_bytes()));
    }
}

/// The claims an identity reads beyond the registered ones; a gate's
/// policy has keyward-jose keep their JSON text while it parses the payload.
pub(crate) const KEPT_CLAIMS: &[&str] = &["azp", "scp", "permissions", "cnf"];

/// The `cnf` claim (RFC 7800): an object; `jkt` (RFC 9449)
/// and `x5t#S256` (RFC 8705), when present, strings.
#[derive(Default, serde::Deserialize)]
struct Confirmation {
    #[serde(default)]
    jkt: Option<String>,
    #[serde(default, rename = "x5t#S256")]
    x5t_s256: Option<String>,
}

/// The members jose does not read, as found.
#[derive(Default)]
struct Extra<'a> {
    azp: Shape<'a>,
    scp: Shape<'a>,
    permissions: Shape<'a>,
    cnf: Option<Confirmation>,
}

impl<'a> Extra<'a> {
    /// From the JSON text jose kept, or else one more pass over the payload
    /// (claims parsed without [`KEPT_CLAIMS`]); strings are borrowed.
    fn of(claims: &'a Claims) -> Result<Extra<'a>, VerifyError> {
        let kept = (
            claims.kept("azp"),
            claims.kept("scp"),
            claims.kept("permissions"),
            claims.kept("cnf"),
        );
        let (Some(azp), Some(scp), Some(permissions), Some(cnf)) = kept else {
            return claims
                .deserialize_borrowed()
                .map_err(|_| VerifyError::MalformedClaim("payload"));
        };
        let shape = |text: Option<&'a str>, claim| match text {
            None => Ok(Shape::Absent),
            Some(t) => serde_json::from_str(t).map_err(|_| VerifyError::MalformedClaim(claim)),
        };
        Ok(Extra {
            azp: shape(azp, "azp")?,
            scp: shape(scp, "scp")?,
            permissions: shape(permissions, "permissions")?,
            cnf: cnf
                .map(serde_json::from_str::<Option<Confirmation>>)
                .transpose()
                .map_err(|_| VerifyError::MalformedClaim("cnf"))?
                .flatten(),
        })
    }
}

impl<'de> serde::Deserialize<'de> for Extra<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Extra<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Extra<'de>, A::Error> {
                let mut out = Extra::default();
                // Names through Shape: borrowed unless escaped ("\u0070ermissions").
                while let Some(k) = m.next_key::<Shape<'de>>()? {
                    let Shape::Str(k) = k else {
                        return Err(de::Error::custom("member name"));
                    };
                    let slot = match k.as_ref() {
                        "azp" => &mut out.azp,
                        "scp" => &mut out.scp,
                        "permissions" => &mut out.permissions,
                        "cnf" => {
                            out.cnf = m.next_value()?;
                            continue;
                        }
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = m.next_value()?;
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// A claim's value: a string, an array of strings, or anything else.
#[derive(Default)]
enum Shape<'a> {
    #[default]
    Absent,
    Str(Cow<'a, str>),
    List(Vec<Cow<'a, str>>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Shape<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Shape<'de>, E> {
                Ok(Shape::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Shape<'de>, E> {
                Ok(Shape::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Shape<'de>, A::Error> {
                let mut items = Vec::new();
                let mut all_strings = true;
                while let Some(item) = s.next_element::<Shape<'de>>()? {
                    match item {
                        Shape::Str(v) => items.push(v),
                        _ => all_strings = false,
                    }
                }
                Ok(if all_strings {
                    Shape::List(items)
                } else {
                    Shape::Other
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Shape<'de>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Shape::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            // `null` reads as absent, as it always has (inside an array it
            // is not a string, so the array is refused).
            fn visit_unit<E: de::Error>(self) -> Result<Shape<'de>, E> {
                Ok(Shape::Absent)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity of a payload, read both ways (claims kept by jose, and
    /// a second pass over the payload): the two must agree.
    fn identity(payload: &str) -> Result<Identity, VerifyError> {
        let plain = crate::verified_claims(payload, &[]);
        let keeping = crate::verified_claims(payload, KEPT_CLAIMS);
        assert_eq!(plain.kept("permissions"), None);
        assert!(keeping.kept("permissions").is_some());
        let a = Identity::from_claims(plain, Some("k1".into()));
        let b = Identity::from_claims(keeping, Some("k1".into()));
        match (&a, &b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    (&a.client_id, &a.scopes, &a.permissions, &a.cnf_jkt),
                    (&b.client_id, &b.scopes, &b.permissions, &b.cnf_jkt)
                );
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("the two readings disagree on {payload}: {a:?} / {b:?}"),
        }
        a
    }

    #[test]
    fn reads_the_members_jose_does_not_keep() {
        let id = identity(
            r#"{"iss":"i","sub":"s","azp":"web","scope":"a  b","scp":["c"],
                "permissions":["orders.*","x\u002ey"],"other":{"permissions":1}}"#,
        )
        .unwrap();
        assert_eq!(id.client_id.as_deref(), Some("web"));
        assert_eq!(id.scopes, ["a", "b", "c"]);
        assert_eq!(id.permissions, ["orders.*", "x.y"]);
        assert_eq!(id.kid.as_deref(), Some("k1"));
        // client_id wins over azp; an escaped member name is the same name.
        let id = identity(r#"{"client_id":"c","azp":"web","\u0070ermissions":["p"]}"#).unwrap();
        assert_eq!(id.client_id.as_deref(), Some("c"));
        assert_eq!(id.permissions, ["p"]);
        for empty in ["{}", r#"{"azp":null,"scp":null,"permissions":null}"#] {
            let id = identity(empty).unwrap();
            assert!(id.scopes.is_empty() && id.permissions.is_empty() && id.client_id.is_none());
        }
    }

    #[test]
    fn cnf_jkt_is_read_and_must_be_a_string_in_an_object() {
        let id = identity(r#"{"cnf":{"jkt":"abc","x5t#S256":"d"}}"#).unwrap();
        assert_eq!(id.cnf_jkt.as_deref(), Some("abc"));
        for none in ["{}", r#"{"cnf":null}"#, r#"{"cnf":{}}"#] {
            assert_eq!(identity(none).unwrap().cnf_jkt, None, "{none}");
        }
        for bad in [
            r#"{"cnf":"abc"}"#,
            r#"{"cnf":{"jkt":7}}"#,
            r#"{"cnf":{"jkt":["a"]}}"#,
            r#"{"cnf":[{"jkt":"a"}]}"#,
        ] {
            let kept = crate::verified_claims(bad, KEPT_CLAIMS);
            assert_eq!(
                Identity::from_claims(kept, None).unwrap_err(),
                VerifyError::MalformedClaim("cnf"),
                "{bad}"
            );
            let plain = crate::verified_claims(bad, &[]);
            assert!(Identity::from_claims(plain, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrong_types_are_refused_not_ignored() {
        for (payload, claim) in [
            (r#"{"permissions":"orders.*"}"#, "permissions"),
            (r#"{"permissions":[null]}"#, "permissions"),
            (r#"{"permissions":["a",1]}"#, "permissions"),
            (r#"{"permissions":[["a"]]}"#, "permissions"),
            (r#"{"permissions":{"a":1}}"#, "permissions"),
            (r#"{"scp":"a b"}"#, "scp"),
            (r#"{"scp":[true]}"#, "scp"),
            (r#"{"azp":7}"#, "azp"),
            (r#"{"azp":["web"]}"#, "azp"),
        ] {
            assert_eq!(
                identity(payload).unwrap_err(),
                VerifyError::MalformedClaim(claim),
                "{payload}"
            );
        }
    }

    /// Whatever keyward-jose's rule accepts is a valid header value, so the
    /// issuer (which checks the rule) never mints what the gate refuses.
    #[test]
    fn the_shared_rule_admits_only_header_values() {
        for c in (0u32..0x3100).filter_map(char::from_u32) {
            let s = format!("a{c}b");
            if claim_text::check_value(&s).is_ok() {
                assert!(HeaderValue::from_bytes(s.as_bytes()).is_ok(), "{s:?}");
            }
            let id = identity(&serde_json::json!({"iss": "i", "sub": s}).to_string()).unwrap();
            let sub = id.header_values().subject.clone().unwrap();
            assert_eq!(sub.is_ok(), claim_text::check_value(&s).is_ok(), "{s:?}");
        }
    }
}
