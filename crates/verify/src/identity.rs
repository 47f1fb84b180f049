//! Who a verified token says the caller is.

use keyward_jose::Claims;

use crate::error::VerifyError;

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
    /// Whether this token's issuer policy lets a bare `*` grant cover
    /// every permission.
    pub allow_wildcard_all: bool,
    /// All claims.
    pub claims: Claims,
}

impl Identity {
    /// Reads the identity from verified claims. `permissions` and `scp`, when
    /// present, must be arrays of strings and `scope` a string; a wrong type
    /// rejects the token rather than granting nothing silently.
    pub fn from_claims(claims: Claims, kid: Option<String>) -> Result<Identity, VerifyError> {
        // One pass over the payload for the members jose does not keep.
        #[derive(serde::Deserialize)]
        struct Extra {
            azp: Option<serde_json::Value>,
            scp: Option<serde_json::Value>,
            permissions: Option<serde_json::Value>,
            scope: Option<serde_json::Value>,
        }
        let extra: Extra = claims
            .deserialize()
            .map_err(|_| VerifyError::MalformedClaim("payload"))?;
        let issuer = claims.iss().unwrap_or_default().to_string();
        let subject = claims.sub().map(str::to_owned);
        let client_id = match (claims.client_id(), extra.azp) {
            (Some(c), _) => Some(c.to_string()),
            (None, Some(serde_json::Value::String(s))) => Some(s),
            (None, None) => None,
            (None, Some(_)) => return Err(VerifyError::MalformedClaim("azp")),
        };
        let mut scopes: Vec<String> = match (claims.scope(), &extra.scope) {
            (Some(s), _) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            (None, Some(_)) => return Err(VerifyError::MalformedClaim("scope")),
            (None, None) => Vec::new(),
        };
        if let Some(scp) = extra.scp {
            scopes.extend(string_array(scp).ok_or(VerifyError::MalformedClaim("scp"))?);
        }
        let permissions = match extra.permissions {
            Some(p) => string_array(p).ok_or(VerifyError::MalformedClaim("permissions"))?,
            None => Vec::new(),
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
            allow_wildcard_all: false,
            claims,
        })
    }
}

fn string_array(v: serde_json::Value) -> Option<Vec<String>> {
    match v {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}
