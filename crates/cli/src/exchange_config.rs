//! The `[token_exchange]` section of the server configuration: per
//! environment, the other issuers whose access tokens its clients may trade
//! in at the token endpoint (RFC 8693 token exchange). Each entry is
//! verified through keyward-verify exactly as the `[admin]` SSO issuer is
//! (same fields, same rules: see `admin_config.rs`); a client must also list
//! the issuer in its `exchange_issuers` (`keyward clients update
//! --exchange-issuer URL`).
//!
//! ```toml
//! [[token_exchange.trusted_issuers]]
//! env = "prod"                                   # the environment trusting it
//! issuer = "https://sso.example.com/realms/apps" # its `iss`, byte for byte
//! audience = "keyward-prod"                      # `aud` must contain it (required)
//! # jwks_uri = "https://sso.example.com/keys"    # default: OIDC discovery
//! # algorithms = ["RS256", "ES256"]              # default: keyward-verify's
//! # max_token_lifetime = "12h"                   # longest accepted exp - iat
//! ```

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use keyward_verify::Gate;
use serde::Deserialize;
use serde_json::Value;

use crate::admin_config::trusted_issuer_policy;

/// The section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenExchange {
    #[serde(default)]
    pub trusted_issuers: Vec<RawTrustedIssuer>,
}

/// One `[[token_exchange.trusted_issuers]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedIssuer {
    /// The environment (by name) that trusts it.
    pub env: String,
    pub issuer: String,
    /// A value its tokens' `aud` must contain.
    pub audience: String,
    pub jwks_uri: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub max_token_lifetime: Option<String>,
}

/// The resolved section: one gate per environment, and what to show.
#[derive(Clone, Debug, Default)]
pub struct ExchangeIssuers {
    pub gates: HashMap<String, Gate>,
    summary: Vec<Value>,
}

impl ExchangeIssuers {
    /// As shown by `serve --check`.
    pub fn to_json(&self) -> Value {
        Value::Array(self.summary.clone())
    }
}

impl RawTokenExchange {
    /// Validates every entry; builds one gate per environment.
    pub fn resolve(self) -> Result<ExchangeIssuers> {
        const SECTION: &str = "[[token_exchange.trusted_issuers]]";
        let mut by_env: Vec<(String, Vec<keyward_verify::IssuerPolicy>)> = Vec::new();
        let mut summary = Vec::new();
        for t in self.trusted_issuers {
            if t.env.is_empty() {
                bail!("{SECTION} env is empty");
            }
            if t.audience.is_empty() {
                bail!("{SECTION} audience is required: without it any token of {}, made for any application, could be exchanged", t.issuer);
            }
            let (policy, mut shown) = trusted_issuer_policy(
                SECTION,
                &t.issuer,
                t.audience,
                t.jwks_uri.as_deref(),
                t.algorithms.as_deref(),
                t.max_token_lifetime.as_deref(),
            )?;
            shown["env"] = Value::from(t.env.clone());
            summary.push(shown);
            match by_env.iter_mut().find(|(e, _)| *e == t.env) {
                Some((_, list)) => list.push(policy),
                None => by_env.push((t.env, vec![policy])),
            }
        }
        let mut gates = HashMap::new();
        for (env, policies) in by_env {
            let mut b = Gate::builder();
            for p in policies {
                b = b.issuer(p);
            }
            let gate = b
                .build()
                .map_err(|e| anyhow!("{SECTION} for environment {env}: {e}"))?;
            gates.insert(env, gate);
        }
        Ok(ExchangeIssuers { gates, summary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<ExchangeIssuers> {
        #[derive(Deserialize)]
        struct File {
            token_exchange: RawTokenExchange,
        }
        toml::from_str::<File>(text)
            .unwrap()
            .token_exchange
            .resolve()
    }

    #[test]
    fn one_gate_per_environment() {
        let x = resolve(
            r#"
            [[token_exchange.trusted_issuers]]
            env = "prod"
            issuer = "https://sso.example.com/a"
            audience = "keyward-prod"
            [[token_exchange.trusted_issuers]]
            env = "prod"
            issuer = "https://idp.example.org"
            audience = "keyward"
            jwks_uri = "https://idp.example.org/keys"
            algorithms = ["ES256"]
            [[token_exchange.trusted_issuers]]
            env = "dev"
            issuer = "http://127.0.0.1:9000/sso"
            audience = "dev"
        "#,
        )
        .unwrap();
        assert_eq!(x.gates.len(), 2);
        let prod: Vec<&str> = x.gates["prod"]
            .issuers()
            .iter()
            .map(|t| t.policy.issuer.as_str())
            .collect();
        assert_eq!(
            prod,
            ["https://sso.example.com/a", "https://idp.example.org"]
        );
        let idp = &x.gates["prod"].issuers()[1].policy;
        assert_eq!(idp.audiences, ["keyward"]);
        assert_eq!(
            idp.source,
            keyward_verify::KeySource::JwksUri("https://idp.example.org/keys".into())
        );
        assert_eq!(x.to_json()[2]["env"], "dev");
    }

    #[test]
    fn refuses_what_would_weaken_it() {
        let err = |body: &str| {
            resolve(&format!("[[token_exchange.trusted_issuers]]\n{body}"))
                .unwrap_err()
                .to_string()
        };
        let ok = "env = \"e\"\naudience = \"a\"\n";
        assert!(err(&format!("{ok}issuer = \"http://sso.example.com\"")).contains("trusted_issuer"));
        assert!(
            err("env = \"e\"\naudience = \"\"\nissuer = \"https://x.example\"")
                .contains("audience is required")
        );
        assert!(err(&format!(
            "{ok}issuer = \"https://x.example\"\nalgorithms = [\"HS256\"]"
        ))
        .contains("algorithms"));
        let twice = format!("{ok}issuer = \"https://x.example\"\n[[token_exchange.trusted_issuers]]\n{ok}issuer = \"https://x.example\"");
        assert!(err(&twice).contains("environment e"), "{}", err(&twice));
    }
}
