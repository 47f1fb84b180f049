//! The `[admin]` section of the server configuration: an external OIDC
//! issuer (the company's SSO) whose access tokens the admin API accepts,
//! their `permissions` claim read as admin grants.
//!
//! ```toml
//! [admin]
//! trusted_issuer = "https://sso.example.com/realms/ops"  # its `iss`, byte for byte
//! audience = "keyward-admin"          # `aud` must contain it (required)
//! # jwks_uri = "https://sso.example.com/keys"   # default: OIDC discovery
//! # algorithms = ["RS256", "ES256"]             # default: keyward-verify's
//! # allow_wildcard_all = false        # whether a bare `*` grant covers everything
//! # max_token_lifetime = "12h"        # longest accepted exp - iat
//! ```
//!
//! Environment overrides: `KEYWARD_ADMIN_TRUSTED_ISSUER`,
//! `KEYWARD_ADMIN_AUDIENCE`, `KEYWARD_ADMIN_JWKS_URI`.

use anyhow::{anyhow, bail, Result};
use keyward_verify::{Gate, IssuerPolicy, KeySource};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::args::parse_duration;

/// The section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// The issuer whose access tokens the admin API accepts.
    pub trusted_issuer: Option<String>,
    /// A value their `aud` must contain.
    pub audience: Option<String>,
    /// Where its keys are (default: its OIDC discovery document).
    pub jwks_uri: Option<String>,
    /// Accepted algorithms.
    pub algorithms: Option<Vec<String>>,
    /// Whether a bare `*` in `permissions` covers everything (default false).
    pub allow_wildcard_all: Option<bool>,
    /// Longest accepted `exp - iat` (default 12h).
    pub max_token_lifetime: Option<String>,
}

impl RawAdmin {
    /// Applies `KEYWARD_ADMIN_*` variables from `var`.
    pub fn apply_env(&mut self, var: &impl Fn(&str) -> Option<String>) {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        if let Some(v) = get("KEYWARD_ADMIN_TRUSTED_ISSUER") {
            self.trusted_issuer = Some(v);
        }
        if let Some(v) = get("KEYWARD_ADMIN_AUDIENCE") {
            self.audience = Some(v);
        }
        if let Some(v) = get("KEYWARD_ADMIN_JWKS_URI") {
            self.jwks_uri = Some(v);
        }
    }

    /// The trusted issuer's gate, or `None` when none is configured.
    pub fn resolve(self) -> Result<Option<AdminIssuer>> {
        let Some(issuer) = self.trusted_issuer else {
            if self.audience.is_some() || self.jwks_uri.is_some() || self.algorithms.is_some() {
                bail!("[admin]: audience, jwks_uri and algorithms apply to a trusted_issuer, and none is set");
            }
            return Ok(None);
        };
        keyward_verify::check_url(&issuer, false)
            .map_err(|e| anyhow!("[admin] trusted_issuer: {e}"))?;
        let Some(audience) = self.audience.filter(|a| !a.is_empty()) else {
            bail!("[admin] audience is required with trusted_issuer: without it any token of that issuer, made for any application, would be an admin credential");
        };
        let mut policy = IssuerPolicy::new(issuer.clone());
        policy.audiences = vec![audience];
        if let Some(uri) = &self.jwks_uri {
            keyward_verify::check_url(uri, false).map_err(|e| anyhow!("[admin] jwks_uri: {e}"))?;
            policy.source = KeySource::JwksUri(uri.clone());
        }
        if let Some(algs) = &self.algorithms {
            policy.algorithms = IssuerPolicy::parse_algorithms(algs)
                .map_err(|e| anyhow!("[admin] algorithms: {e}"))?;
        }
        policy.allow_wildcard_all = self.allow_wildcard_all.unwrap_or(false);
        let lifetime = parse_duration(self.max_token_lifetime.as_deref().unwrap_or("12h"))
            .map_err(|e| anyhow!("[admin] max_token_lifetime: {e}"))?;
        if lifetime < 60 {
            bail!("[admin] max_token_lifetime must be at least 1m");
        }
        policy.max_lifetime_secs = Some(lifetime as u64);
        let summary = json!({
            "trusted_issuer": issuer,
            "audience": policy.audiences[0],
            "jwks_uri": self.jwks_uri,
            "algorithms": policy.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>(),
            "allow_wildcard_all": policy.allow_wildcard_all,
            "max_token_lifetime_secs": lifetime,
        });
        let gate = Gate::builder()
            .issuer(policy)
            .build()
            .map_err(|e| anyhow!("[admin] trusted_issuer: {e}"))?;
        Ok(Some(AdminIssuer { gate, summary }))
    }
}

/// A resolved trusted issuer: its gate, and what to show of it.
#[derive(Clone, Debug)]
pub struct AdminIssuer {
    pub gate: Gate,
    summary: Value,
}

impl AdminIssuer {
    /// The configuration as shown by `serve --check` and logs.
    pub fn to_json(&self) -> Value {
        self.summary.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawAdmin {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn resolves_a_trusted_issuer() {
        let a = raw(r#"
            trusted_issuer = "https://sso.example.com/realms/ops"
            audience = "keyward-admin"
            algorithms = ["ES256"]
        "#)
        .resolve()
        .unwrap()
        .unwrap();
        let t = &a.gate.issuers()[0].policy;
        assert_eq!(t.issuer, "https://sso.example.com/realms/ops");
        assert_eq!(t.audiences, ["keyward-admin"]);
        assert_eq!(t.source, KeySource::Discovery);
        assert!(!t.allow_wildcard_all);
        assert_eq!(t.max_lifetime_secs, Some(12 * 3600));
        assert_eq!(a.to_json()["algorithms"], json!(["ES256"]));
        assert!(RawAdmin::default().resolve().unwrap().is_none());
    }

    #[test]
    fn refuses_what_would_weaken_it() {
        let err = |t: &str| raw(t).resolve().unwrap_err().to_string();
        assert!(
            err(r#"trusted_issuer = "https://sso.example.com""#).contains("audience is required")
        );
        assert!(err(r#"
            trusted_issuer = "http://sso.example.com"
            audience = "a"
        "#)
        .contains("trusted_issuer"));
        assert!(err(r#"
            trusted_issuer = "https://sso.example.com"
            audience = "a"
            algorithms = ["HS256"]
        "#)
        .contains("algorithms"));
        assert!(err(r#"audience = "a""#).contains("none is set"));
        assert!(err(r#"
            trusted_issuer = "https://sso.example.com"
            audience = "a"
            max_token_lifetime = "10s"
        "#)
        .contains("at least 1m"));
        assert!(toml::from_str::<RawAdmin>("trusted = \"x\"").is_err());
    }
}
