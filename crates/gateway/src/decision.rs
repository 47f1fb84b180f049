//! The decision log: one line per request at target `keyward::decision`
//! (JSON when the process logs JSON) with the route, method, path (never the
//! query, which may carry secrets), the caller's subject, client and issuer,
//! the API key id when the caller used one, the outcome (`allow`/`deny`)
//! and its reason, the status sent and the latency. Never the token, the
//! `Authorization` header or the API key itself.
//!
//! Filter it like any target: `KEYWARD_LOG=info,keyward::decision=off`
//! turns it off.

use std::time::Duration;

use http::Method;
use keyward_verify::Identity;

/// Whether the request went upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded upstream (the status may still be an upstream failure).
    Allow,
    /// Answered by the gateway.
    Deny,
}

impl Outcome {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
        }
    }
}

/// One request's decision.
#[derive(Debug)]
pub struct Decision<'a> {
    /// The route's name, or `-`.
    pub route: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The request path, without the query.
    pub path: &'a str,
    /// The verified caller, if any.
    pub identity: Option<&'a Identity>,
    /// The id of the API key the request claimed, when it was refused
    /// before it had an identity (an API key's identity names its id).
    pub api_key: Option<&'a str>,
    /// Allowed or denied.
    pub outcome: Outcome,
    /// Why (a stable label: `token`, `anonymous`, `expired`, `no_route`...).
    pub reason: &'a str,
    /// The status sent.
    pub status: u16,
    /// Time from the request's arrival to its response headers.
    pub latency: Duration,
}

impl Decision<'_> {
    /// Writes the log line.
    pub fn log(&self) {
        let id = self.identity;
        // An API key's identity has the key id as its client.
        let api_key = self.api_key.or_else(|| {
            id.filter(|i| i.issuer == crate::api_keys::ISSUER)
                .and_then(|i| i.client_id.as_deref())
        });
        tracing::info!(
            target: "keyward::decision",
            route = self.route,
            method = self.method.as_str(),
            path = self.path,
            subject = id.and_then(|i| i.subject.as_deref()).unwrap_or("-"),
            client = id.and_then(|i| i.client_id.as_deref()).unwrap_or("-"),
            issuer = id.map_or("-", |i| i.issuer.as_str()),
            api_key = api_key.unwrap_or("-"),
            outcome = self.outcome.as_str(),
            reason = self.reason,
            status = self.status,
            latency_us = self.latency.as_micros() as u64,
            "decision"
        );
    }
}
