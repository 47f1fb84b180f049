//! What keyward issues: RFC 9068 access tokens (signed JWTs, `typ: at+jwt`)
//! and opaque refresh tokens stored only as hashes. Secrets are prefixed so
//! secret scanners can recognise them (`kws_` client secret, `kwr_` refresh
//! token, `kwa_` admin token).

use keyward_jose::b64;
use keyward_jose::crypto::{random_bytes, sha256};
use keyward_store::Timestamp;
use serde_json::{json, Map, Value};

/// A new random identifier (`jti`, client id, family id): 128 bits, base64url.
pub fn new_id() -> String {
    b64::encode(&random_bytes::<16>())
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
    let s = format!("{prefix}{}", b64::encode(&random_bytes::<32>()));
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
    /// collide with those.
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("iss".into(), json!(self.issuer));
        m.insert("sub".into(), json!(self.subject));
        m.insert(
            "aud".into(),
            if self.audience.len() == 1 {
                json!(self.audience[0])
            } else {
                json!(self.audience)
            },
        );
        m.insert("exp".into(), json!(self.now + self.ttl));
        m.insert("iat".into(), json!(self.now));
        m.insert("nbf".into(), json!(self.now));
        m.insert("jti".into(), json!(self.jti));
        m.insert("client_id".into(), json!(self.client_id));
        if !self.scope.is_empty() {
            m.insert("scope".into(), json!(self.scope.join(" ")));
        }
        for (k, v) in self.extra {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        serde_json::to_vec(&Value::Object(m)).expect("claims serialize")
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

    #[test]
    fn secrets_are_prefixed_256_bit_and_hashed() {
        let (s, h) = new_secret("kws_");
        assert!(s.starts_with("kws_"));
        assert_eq!(b64::decode(&s[4..]).unwrap().len(), 32);
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
