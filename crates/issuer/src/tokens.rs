//! What keyward issues: RFC 9068 access tokens (signed JWTs, `typ: at+jwt`)
//! and opaque refresh tokens stored only as hashes. Secrets are prefixed so
//! secret scanners can recognise them (`kws_` client secret, `kwr_` refresh
//! token, `kwa_` admin token).

use keyward_jose::crypto::{random_text, sha256};
use keyward_store::Timestamp;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// A new random identifier (`jti`, client id, family id): 128 bits, base64url.
pub fn new_id() -> String {
    random_text::<16>()
}

/// A new client id: like [`new_id`], but never starting with `-`, so that it
/// can be passed to a command line as is.
pub fn new_client_id() -> String {
    loop {
        let id = new_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// A new secret with `prefix` and 256 random bits, and its SHA-256 (the only
/// form stored).
pub fn new_secret(prefix: &str) -> (String, Vec<u8>) {
    let s = format!("{prefix}{}", random_text::<32>());
    let h = hash_secret(&s);
    (s, h)
}

/// The stored form of a secret. High-entropy secrets need no slow hash.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    sha256(secret.as_bytes()).to_vec()
}

/// The claims of an access token.
#[derive(Clone, Debug)]
pub struct AccessClaims<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub client_id: &'a str,
    pub audience: &'a [String],
    pub scope: &'a [String],
    pub extra: &'a Map<String, Value>,
    pub now: Timestamp,
    pub ttl: i64,
    pub jti: &'a str,
}

impl AccessClaims<'_> {
    /// The JSON payload (RFC 9068 §2.2): iss, sub, aud, exp, iat, nbf, jti,
    /// client_id, scope, then extra claims (roles, permissions) that do not
    /// collide with those. Members come in name order, as a JSON object
    /// built in a `serde_json::Map` would list them.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        serde_json::to_writer(&mut out, self).expect("claims serialize");
        out
    }
}

/// A registered claim's value.
enum Member<'a> {
    Str(&'a str),
    Num(i64),
    /// `aud`: a string when there is one audience, else an array.
    Aud(&'a [String]),
    /// `scope`: the scopes joined by spaces.
    Scope(&'a [String]),
}

impl Serialize for Member<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Member::Str(v) => s.serialize_str(v),
            Member::Num(n) => s.serialize_i64(*n),
            Member::Aud([one]) => s.serialize_str(one),
            Member::Aud(all) => all.serialize(s),
            Member::Scope(scopes) => s.collect_str(&Joined(scopes)),
        }
    }
}

/// Strings joined by single spaces, written without an intermediate `String`.
struct Joined<'a>(&'a [String]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl Serialize for AccessClaims<'_> {
    /// Serialized straight from the borrowed fields, without building a
    /// `Map` of owned values first. The registered members are listed in
    /// name order and merged with the extra claims (a `Map` iterates in name
    /// order too), so the bytes are those a `Map` would give.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let registered = [
            ("aud", Some(Member::Aud(self.audience))),
            ("client_id", Some(Member::Str(self.client_id))),
            ("exp", Some(Member::Num(self.now + self.ttl))),
            ("iat", Some(Member::Num(self.now))),
            ("iss", Some(Member::Str(self.issuer))),
            ("jti", Some(Member::Str(self.jti))),
            ("nbf", Some(Member::Num(self.now))),
            (
                "scope",
                (!self.scope.is_empty()).then_some(Member::Scope(self.scope)),
            ),
            ("sub", Some(Member::Str(self.subject))),
        ];
        let mut registered = registered
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .peekable();
        let taken = |k: &str| match k {
            "scope" => !self.scope.is_empty(),
            "aud" | "client_id" | "exp" | "iat" | "iss" | "jti" | "nbf" | "sub" => true,
            _ => false,
        };
        let mut extra = self.extra.iter().filter(|(k, _)| !taken(k)).peekable();
        let mut map = s.serialize_map(None)?;
        loop {
            let extra_first = match (registered.peek(), extra.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((r, _)), Some((e, _))) => e.as_str() < *r,
            };
            if extra_first {
                let (k, v) = extra.next().expect("peeked");
                map.serialize_entry(k, v)?;
            } else {
                let (k, v) = registered.next().expect("peeked");
                map.serialize_entry(k, &v)?;
            }
        }
        map.end()
    }
}

/// Splits a space-separated scope string (RFC 6749 §3.3) into unique tokens.
pub fn parse_scope(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in s.split(' ').filter(|t| !t.is_empty()) {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_prefixed_256_bit_and_hashed() {
        let (s, h) = new_secret("kws_");
        assert!(s.starts_with("kws_"));
        // 256 bits: 43 characters of unpadded base64url.
        assert_eq!(s.len(), 4 + 43);
        assert!(s[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(h, hash_secret(&s));
        assert_ne!(new_secret("kws_").0, s);
    }

    #[test]
    fn claims_have_rfc9068_members_and_extras_do_not_override() {
        let mut extra = Map::new();
        extra.insert("permissions".into(), json!(["a.b"]));
        extra.insert("iss".into(), json!("evil"));
        let aud = vec!["api".to_string()];
        let scope = vec!["read".to_string(), "write".to_string()];
        let c = AccessClaims {
            issuer: "https://i",
            subject: "alice",
            client_id: "c1",
            audience: &aud,
            scope: &scope,
            extra: &extra,
            now: 100,
            ttl: 60,
            jti: "j",
        };
        let v: Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(v["iss"], "https://i");
        assert_eq!(v["aud"], "api");
        assert_eq!(v["exp"], 160);
        assert_eq!(v["scope"], "read write");
        assert_eq!(v["permissions"][0], "a.b");
    }

    /// The claims as a `Map` builds them: the reference for the bytes.
    fn claims_via_map(c: &AccessClaims<'_>) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("iss".into(), json!(c.issuer));
        m.insert("sub".into(), json!(c.subject));
        m.insert(
            "aud".into(),
            if c.audience.len() == 1 {
                json!(c.audience[0])
            } else {
                json!(c.audience)
            },
        );
        m.insert("exp".into(), json!(c.now + c.ttl));
        m.insert("iat".into(), json!(c.now));
        m.insert("nbf".into(), json!(c.now));
        m.insert("jti".into(), json!(c.jti));
        m.insert("client_id".into(), json!(c.client_id));
        if !c.scope.is_empty() {
            m.insert("scope".into(), json!(c.scope.join(" ")));
        }
        for (k, v) in c.extra {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        serde_json::to_vec(&Value::Object(m)).unwrap()
    }

    #[test]
    fn claims_bytes_match_a_map_of_the_same_members() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let extras = [
            json!({}),
            json!({"roles": ["admin"], "permissions": ["orders.*"]}),
            json!({"iss": "evil", "aud": "x", "sub": "y", "exp": 1, "zzz": true, "a": 1}),
            // `scope` is only taken when the token has scopes.
            json!({"scope": "from-extra", "nbf2": "\"q\"", "jti": 0}),
        ];
        for extra in &extras {
            let extra = extra.as_object().unwrap();
            for aud in [strings(&[]), strings(&["api"]), strings(&["a", "b\"c"])] {
                for scope in [
                    strings(&[]),
                    strings(&["read"]),
                    strings(&["r", "w", "x.y"]),
                ] {
                    let c = AccessClaims {
                        issuer: "https://i/\u{e9}",
                        subject: "alice \"a\"",
                        client_id: "c1",
                        audience: &aud,
                        scope: &scope,
                        extra,
                        now: 1_700_000_000,
                        ttl: 3600,
                        jti: "j-1",
                    };
                    assert_eq!(
                        String::from_utf8(c.to_json()).unwrap(),
                        String::from_utf8(claims_via_map(&c)).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn client_ids_never_look_like_flags() {
        assert!((0..2000).all(|_| !new_client_id().starts_with('-')));
    }

    #[test]
    fn scopes_split_on_spaces() {
        assert_eq!(parse_scope(" a  b a "), vec!["a", "b"]);
        assert!(parse_scope("").is_empty());
    }
}
