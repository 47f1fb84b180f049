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
        let Some(audience) = self.audience.filter(|a| !a.is_empty()) else {
            bail!("[admin] audience is required with trusted_issuer: without it any token of that issuer, made for any application, would be an admin credential");
        };
        let (mut policy, mut summary) = trusted_issuer_policy(
            "[admin]",
            &issuer,
            audience,
            self.jwks_uri.as_deref(),
            self.algorithms.as_deref(),
            self.max_token_lifetime.as_deref(),
        )?;
        policy.allow_wildcard_all = self.allow_wildcard_all.unwrap_or(false);
        summary["trusted_issuer"] = summary["issuer"].take();
        if let Value::Object(m) = &mut summary {
            m.remove("issuer");
        }
        summary["allow_wildcard_all"] = json!(policy.allow_wildcard_all);
        let gate = Gate::builder()
            .issuer(policy)
            .build()
            .map_err(|e| anyhow!("[admin] trusted_issuer: {e}"))?;
        Ok(Some(AdminIssuer { gate, summary }))
    }
}

/// The policy for another issuer's access tokens, from the fields the
/// `[admin]` section and each `[[token_exchange.trusted_issuers]]` entry
/// share (`section` names the one in errors): `iss` byte for byte, the
/// required `audience`, keys from `jwks_uri` or OIDC discovery, the
/// accepted algorithms, the longest accepted lifetime (default 12h); and
/// what `serve --check` shows of it.
pub fn trusted_issuer_policy(
    section: &str,
    issuer: &str,
    audience: String,
    jwks_uri: Option<&str>,
    algorithms: Option<&[String]>,
    max_token_lifetime: Option<&str>,
) -> Result<(IssuerPolicy, Value)> {
    keyward_verify::check_url(issuer, false)
        .map_err(|e| anyhow!("{section} trusted_issuer: {e}"))?;
    let mut policy = IssuerPolicy::new(issuer);
    policy.audiences = vec![audience];
    if let Some(uri) = jwks_uri {
        keyward_verify::check_url(uri, false).map_err(|e| anyhow!("{section} jwks_uri: {e}"))?;
        policy.source = KeySource::JwksUri(uri.to_owned());
    }
    if let Some(algs) = algorithms {
        policy.algorithms = IssuerPolicy::parse_algorithms(algs)
            .map_err(|e| anyhow!("{section} algorithms: {e}"))?;
    }
    let lifetime = parse_duration(max_token_lifetime.unwrap_or("12h"))
        .map_err(|e| anyhow!("{section} max_token_lifetime: {e}"))?;
    if lifetime < 60 {
        bail!("{section} max_token_lifetime must be at least 1m");
    }
    policy.max_lifetime_secs = Some(lifetime as u64);
    let summary = json!({
        "issuer": issuer,
        "audience": policy.audiences[0],
        "jwks_uri": jwks_uri,
        "algorithms": policy.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "max_token_lifetime_secs": lifetime,
    });
    Ok((policy, summary))
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
