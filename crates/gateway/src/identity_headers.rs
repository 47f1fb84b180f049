//! The headers that tell an upstream who the caller is.
//!
//! Before any request is forwarded, every incoming header whose name is one
//! of the configured identity headers is removed, on every route, anonymous
//! ones included: a caller can never set its own identity. Names are
//! compared case-insensitively and with `_` taken as `-`, because some
//! upstream frameworks (CGI, PHP, WSGI) read `X_Auth_Subject` and
//! `X-Auth-Subject` as the same variable. Then, for a verified caller, the
//! identity is added: subject, client, issuer, and scopes and permissions
//! space-separated.

use http::header::{HeaderMap, HeaderName};
use keyward_verify::{Identity, VerifyError};

/// The configured header names; `None` disables one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// `sub` (default `X-Auth-Subject`).
    pub subject: Option<HeaderName>,
    /// `client_id` / `azp` (default `X-Auth-Client`).
    pub client: Option<HeaderName>,
    /// `iss` (default `X-Auth-Issuer`).
    pub issuer: Option<HeaderName>,
    /// Scopes, space-separated (default `X-Auth-Scopes`).
    pub scopes: Option<HeaderName>,
    /// Permissions, space-separated (default `X-Auth-Permissions`).
    pub permissions: Option<HeaderName>,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            subject: Some(HeaderName::from_static("x-auth-subject")),
            client: Some(HeaderName::from_static("x-auth-client")),
            issuer: Some(HeaderName::from_static("x-auth-issuer")),
            scopes: Some(HeaderName::from_static("x-auth-scopes")),
            permissions: Some(HeaderName::from_static("x-auth-permissions")),
        }
    }
}

impl IdentityHeaders {
    /// The five (field, header) pairs, for display.
    pub fn fields(&self) -> [(&'static str, Option<&HeaderName>); 5] {
        [
            ("subject", self.subject.as_ref()),
            ("client", self.client.as_ref()),
            ("issuer", self.issuer.as_ref()),
            ("scopes", self.scopes.as_ref()),
            ("permissions", self.permissions.as_ref()),
        ]
    }

    fn is_identity_name(&self, name: &HeaderName) -> bool {
        let n = name.as_str().as_bytes();
        self.fields().iter().any(|(_, h)| {
            h.is_some_and(|h| {
                let h = h.as_str().as_bytes();
                h.len() == n.len()
                    && h.iter()
                        .zip(n)
                        .all(|(a, b)| a == b || (*a == b'-' && *b == b'_'))
            })
        })
    }

    /// Removes every header that could be taken for an identity header.
    /// A single pass over the names finds the usual case, none.
    pub fn strip(&self, headers: &mut HeaderMap) {
        if !headers.keys().any(|k| self.is_identity_name(k)) {
            return;
        }
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.is_identity_name(k))
            .cloned()
            .collect();
        for k in spoofed {
            headers.remove(&k);
        }
    }

    /// Adds the caller's identity. A claim that fails
    /// `keyward_jose::claim_text` (control characters, white space at
    /// either end of a value or inside a scope or permission; the rule
    /// keyward's issuer checks before it mints) refuses the request rather
    /// than dropping the header, so an upstream never sees a partial or
    /// altered identity. The values are built once per
    /// verified token ([`Identity::header_values`]).
    pub fn insert(&self, headers: &mut HeaderMap, id: &Identity) -> Result<(), VerifyError> {
        let v = id.header_values();
        for (name, value) in [
            (&self.subject, v.subject.as_ref()),
            (&self.client, v.client.as_ref()),
            (&self.issuer, Some(&v.issuer)),
            (&self.scopes, v.scopes.as_ref()),
            (&self.permissions, v.permissions.as_ref()),
        ] {
            if let (Some(name), Some(value)) = (name, value) {
                headers.insert(name.clone(), value.clone()?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_all_spellings() {
        let ih = IdentityHeaders::default();
        let mut h = HeaderMap::new();
        h.insert("X-Auth-Subject", HeaderValue::from_static("evil"));
        h.append("x-auth-subject", HeaderValue::from_static("evil2"));
        h.insert("X_Auth_Client", HeaderValue::from_static("evil"));
        h.insert("x-auth_scopes", HeaderValue::from_static("evil"));
        h.insert("x-other_header", HeaderValue::from_static("kept"));
        h.insert("accept", HeaderValue::from_static("kept"));
        ih.strip(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("accept") && h.contains_key("x-other_header"));
    }

    #[test]
    fn disabled_headers_are_neither_stripped_nor_set() {
        let ih = IdentityHeaders {
            subject: None,
            ..IdentityHeaders::default()
        };
        let mut h = HeaderMap::new();
        h.insert("x-auth-subject", HeaderValue::from_static("upstream's own"));
        ih.strip(&mut h);
        assert!(h.contains_key("x-auth-subject"));
    }

    /// The identity of `payload` signed by a throwaway key and verified
    /// (claims come only out of verification).
    fn identity(payload: &str) -> Identity {
        use keyward_jose::{sign_payload, verify_jwt, Algorithm, KeySet, LocalSigner};
        use keyward_jose::{PrivateKey, TokenSigner, Validation};
        let signer = LocalSigner::new(PrivateKey::generate(Algorithm::EdDSA, None).unwrap(), None);
        let mut keys = KeySet::new();
        let jwk = signer.public_jwk();
        keys.insert(jwk.kid, jwk.key).unwrap();
        let token = sign_payload(&signer, None, payload.as_bytes()).unwrap();
        let no_claim_required = Validation {
            required_claims: Vec::new(),
            ..Validation::default()
        };
        let claims = verify_jwt(&token, &keys, &no_claim_required, 0)
            .unwrap()
            .claims;
        Identity::from_claims(claims, None).unwrap()
    }

    #[test]
    fn a_grant_with_whitespace_is_refused_not_split() {
        let ih = IdentityHeaders::default();
        let ok = identity(r#"{"iss":"i","sub":"s","permissions":["a.b","c.*"]}"#);
        let mut h = HeaderMap::new();
        ih.insert(&mut h, &ok).unwrap();
        assert_eq!(h["x-auth-permissions"], "a.b c.*");
        for bad in [r#"["a.b admin"]"#, r#"["a\tb"]"#, r#"[""]"#] {
            let id = identity(&format!(r#"{{"iss":"i","sub":"s","permissions":{bad}}}"#));
            let err = ih.insert(&mut HeaderMap::new(), &id).unwrap_err();
            assert_eq!(err, VerifyError::MalformedClaim("permissions"), "{bad}");
        }
    }

    #[test]
    fn a_subject_an_upstream_would_read_differently_is_refused() {
        let ih = IdentityHeaders::default();
        // An HTTP field value loses white space at its ends: "admin " would
        // reach the upstream as "admin".
        for sub in [
            r#""admin ""#,
            r#"" admin""#,
            r#""ad\tmin""#,
            r#""ad\u0085min""#,
            r#""""#,
        ] {
            let id = identity(&format!(r#"{{"iss":"i","sub":{sub}}}"#));
            let err = ih.insert(&mut HeaderMap::new(), &id).unwrap_err();
            assert_eq!(err, VerifyError::MalformedClaim("sub"), "{sub}");
        }
        let id = identity(r#"{"iss":"i","sub":"Zoë Ångström"}"#);
        let mut h = HeaderMap::new();
        ih.insert(&mut h, &id).unwrap();
        assert_eq!(h["x-auth-subject"].as_bytes(), "Zoë Ångström".as_bytes());
    }

    #[test]
    fn a_bad_claim_refuses_only_when_its_header_is_wanted() {
        let id = identity(r#"{"iss":"i","sub":"s","scope":"a","permissions":["a b"]}"#);
        let on = IdentityHeaders::default();
        let err = on.insert(&mut HeaderMap::new(), &id).unwrap_err();
        assert_eq!(err, VerifyError::MalformedClaim("permissions"));
        let off = IdentityHeaders {
            permissions: None,
            ..IdentityHeaders::default()
        };
        let mut h = HeaderMap::new();
        off.insert(&mut h, &id).unwrap();
        assert_eq!(h["x-auth-subject"], "s");
        assert_eq!(h["x-auth-scopes"], "a");
        assert!(!h.contains_key("x-auth-permissions"));
        // Built once per identity, then reused.
        assert!(std::ptr::eq(id.header_values(), id.header_values()));
    }
}
