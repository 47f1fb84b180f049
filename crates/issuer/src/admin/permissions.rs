//! The admin permissions: what each admin operation requires, as strings
//! keyward-verify's permission engine matches ([`keyward_verify::Grants`]:
//! exact grants, `prefix.*` group grants, a bare `*` for everything).
//!
//! | permission | allows |
//! |---|---|
//! | `keyward.env.{env}.read` | see the environment (list, show) |
//! | `keyward.env.{env}.write` | create it, change it |
//! | `keyward.env.{env}.delete` | delete it with its keys, clients and tokens |
//! | `keyward.env.{env}.keys.read` | list its keys |
//! | `keyward.env.{env}.keys.rotate` | make its next key (rotate) |
//! | `keyward.env.{env}.keys.retire` | retire one of its keys |
//! | `keyward.env.{env}.keys.revoke` | revoke one of its keys |
//! | `keyward.env.{env}.clients.read` | list and show its clients |
//! | `keyward.env.{env}.clients.write` | create, change, delete clients, rotate their secrets |
//! | `keyward.env.{env}.tokens.mint` | mint user tokens in it |
//! | `keyward.env.{env}.logins.accept` | read, accept and reject its login and consent requests (the login app) |
//! | `keyward.audit.read` | read the audit chain |
//! | `keyward.health.read` | see the console's health page (readiness, signers, token rates) |
//! | `keyward.admin.tokens.read` | list admin tokens (never their values) |
//! | `keyward.admin.tokens.create` | create admin tokens holding at most what the creator holds |
//! | `keyward.admin.tokens.revoke` | revoke admin tokens |
//!
//! `{env}` is the environment's name. The engine never lets a value add a
//! segment, so an environment whose name contains `.` cannot be named in a
//! permission: it is reached only by grants on every environment
//! (`keyward.env.*`, `keyward.*`, `*`), and a refusal names
//! `keyward.env.*`.

use std::fmt;

use keyward_verify::{Grants, Template};

/// The permission to read the audit chain.
pub const AUDIT_READ: &str = "keyward.audit.read";
/// See readiness, signers and token rates (the console's health page).
pub const HEALTH_READ: &str = "keyward.health.read";
/// The permission to list admin tokens.
pub const ADMIN_TOKENS_READ: &str = "keyward.admin.tokens.read";
/// The permission to create admin tokens (each holding at most what its
/// creator holds, and expiring no later).
pub const ADMIN_TOKENS_CREATE: &str = "keyward.admin.tokens.create";
/// The permission to revoke admin tokens.
pub const ADMIN_TOKENS_REVOKE: &str = "keyward.admin.tokens.revoke";

/// The group every environment permission is below.
const ENV_GROUP: &str = "keyward.env";

/// What can be done to one environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnvAction {
    Read,
    Write,
    Delete,
    KeysRead,
    KeysRotate,
    KeysRetire,
    KeysRevoke,
    ClientsRead,
    ClientsWrite,
    TokensMint,
    LoginsAccept,
}

impl EnvAction {
    /// Every action.
    pub const ALL: [EnvAction; 11] = [
        EnvAction::Read,
        EnvAction::Write,
        EnvAction::Delete,
        EnvAction::KeysRead,
        EnvAction::KeysRotate,
        EnvAction::KeysRetire,
        EnvAction::KeysRevoke,
        EnvAction::ClientsRead,
        EnvAction::ClientsWrite,
        EnvAction::TokensMint,
        EnvAction::LoginsAccept,
    ];

    /// The permission as a template: `keyward.env.{env}.keys.rotate`.
    pub fn template(self) -> &'static str {
        match self {
            EnvAction::Read => "keyward.env.{env}.read",
            EnvAction::Write => "keyward.env.{env}.write",
            EnvAction::Delete => "keyward.env.{env}.delete",
            EnvAction::KeysRead => "keyward.env.{env}.keys.read",
            EnvAction::KeysRotate => "keyward.env.{env}.keys.rotate",
            EnvAction::KeysRetire => "keyward.env.{env}.keys.retire",
            EnvAction::KeysRevoke => "keyward.env.{env}.keys.revoke",
            EnvAction::ClientsRead => "keyward.env.{env}.clients.read",
            EnvAction::ClientsWrite => "keyward.env.{env}.clients.write",
            EnvAction::TokensMint => "keyward.env.{env}.tokens.mint",
            EnvAction::LoginsAccept => "keyward.env.{env}.logins.accept",
        }
    }
}

/// A permission an operation requires: a global one, or an action on one
/// environment. Its [`Display`](fmt::Display) is the string a grant must
/// cover (what a 403 names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Permission {
    /// `keyward.audit.read`, `keyward.admin.tokens.create`, ...
    Global(&'static str),
    /// `keyward.env.{env}.<action>` for the environment named.
    Env(EnvAction, String),
}

impl Permission {
    /// An action on environment `env`.
    pub fn env(action: EnvAction, env: &str) -> Permission {
        Permission::Env(action, env.to_owned())
    }

    /// The required string, rendered by keyward-verify's template engine;
    /// `None` for an environment name the engine refuses to put into a
    /// permission (one containing `.`).
    fn rendered(&self) -> Option<String> {
        match self {
            Permission::Global(p) => Some((*p).to_owned()),
            Permission::Env(action, env) => Template::parse(action.template())
                .expect("the catalogue's templates parse")
                .render(|name| (name == "env").then_some(env.as_str())),
        }
    }

    /// Whether `grants` cover this permission. An environment whose name
    /// cannot be rendered needs a grant on every environment.
    pub fn is_covered_by(&self, grants: &Grants) -> bool {
        match self.rendered() {
            Some(required) => grants.covers(&required),
            None => grants.covers_group(ENV_GROUP),
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rendered() {
            Some(r) => f.write_str(&r),
            None => write!(f, "{ENV_GROUP}.*"),
        }
    }
}

/// Longest accepted grant.
pub const MAX_GRANT_LEN: usize = 200;
/// Most grants one admin token may hold.
pub const MAX_GRANTS: usize = 64;

/// Checks the form of a grant given to an admin token: a bare `*`, or
/// dot-separated segments of `[A-Za-z0-9_:-]`, the last of which may be
/// `*` (a group grant). A `*` elsewhere, a `{param}`, an empty segment or
/// white space is refused: the engine would read them as literal text that
/// no requirement ever equals, so they could only mislead.
pub fn check_grant(grant: &str) -> Result<(), String> {
    if grant == "*" {
        return Ok(());
    }
    if grant.is_empty() || grant.len() > MAX_GRANT_LEN {
        return Err(format!("a permission is 1 to {MAX_GRANT_LEN} characters"));
    }
    let body = grant.strip_suffix(".*").unwrap_or(grant);
    for seg in body.split('.') {
        if seg.is_empty() {
            return Err(format!("{grant:?} has an empty segment"));
        }
        if seg.contains('*') {
            return Err(format!(
                "{grant:?}: `*` is allowed only as the whole last segment (`keyward.env.prod.*`) or alone"
            ));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-')))
        {
            return Err(format!(
                "{grant:?} contains {c:?}: segments are letters, digits, `_`, `:` and `-`"
            ));
        }
    }
    Ok(())
}

/// Checks a whole grant list given to an admin token (see [`check_grant`]).
pub fn check_grants(grants: &[String]) -> Result<(), String> {
    if grants.is_empty() {
        return Err("at least one permission is required".into());
    }
    if grants.len() > MAX_GRANTS {
        return Err(format!("at most {MAX_GRANTS} permissions"));
    }
    grants.iter().try_for_each(|g| check_grant(g))
}

/// The first of `wanted` that `held` does not wholly cover (each grant of
/// `wanted` read with a bare `*` covering everything, as admin tokens
/// read it): `None` when a holder of `held` may hand all of `wanted` on.
pub fn first_not_held<'w>(held: &Grants, wanted: &'w [String]) -> Option<&'w str> {
    wanted
        .iter()
        .map(String::as_str)
        .find(|g| !held.includes(g, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(list: &[&str]) -> Grants {
        Grants::new(list, true)
    }

    #[test]
    fn env_permissions_render_and_match() {
        let p = Permission::env(EnvAction::KeysRotate, "prod");
        assert_eq!(p.to_string(), "keyward.env.prod.keys.rotate");
        assert!(p.is_covered_by(&grants(&["keyward.env.prod.keys.*"])));
        assert!(p.is_covered_by(&grants(&["keyward.env.prod.*"])));
        assert!(p.is_covered_by(&grants(&["keyward.*"])));
        assert!(p.is_covered_by(&grants(&["*"])));
        assert!(p.is_covered_by(&grants(&["keyward.env.prod.keys.rotate"])));
        assert!(!p.is_covered_by(&grants(&["keyward.env.prod.keys.read"])));
        assert!(!p.is_covered_by(&grants(&["keyward.env.dev.*"])));
        assert!(!p.is_covered_by(&grants(&["keyward.env.prod"])));
        assert!(!p.is_covered_by(&grants(&["keyward.env.prodx.*"])));
        assert!(!p.is_covered_by(&Grants::new(["*"], false)));
        for a in EnvAction::ALL {
            assert_eq!(
                Permission::env(a, "e").to_string(),
                a.template().replace("{env}", "e")
            );
        }
        let g = Permission::Global(AUDIT_READ);
        assert_eq!(g.to_string(), "keyward.audit.read");
        assert!(g.is_covered_by(&grants(&["keyward.audit.*"])));
        assert!(!g.is_covered_by(&grants(&["keyward.env.*"])));
    }

    #[test]
    fn a_dotted_environment_needs_a_grant_on_every_environment() {
        // `eu.prod` must not be reachable with grants on an environment `eu`.
        let p = Permission::env(EnvAction::KeysRead, "eu.prod");
        assert_eq!(p.to_string(), "keyward.env.*");
        assert!(!p.is_covered_by(&grants(&["keyward.env.eu.*"])));
        assert!(!p.is_covered_by(&grants(&["keyward.env.eu.prod.keys.read"])));
        assert!(!p.is_covered_by(&grants(&["keyward.env.eu.prod.*"])));
        assert!(p.is_covered_by(&grants(&["keyward.env.*"])));
        assert!(p.is_covered_by(&grants(&["keyward.*"])));
        assert!(p.is_covered_by(&grants(&["*"])));
        // Other values the engine refuses fail closed the same way.
        for env in ["*", "{env}", "a b", ""] {
            let p = Permission::env(EnvAction::Read, env);
            assert!(!p.is_covered_by(&grants(&["keyward.env.*.read", "keyward.env.{env}.read"])));
        }
    }

    #[test]
    fn grant_forms() {
        for ok in [
            "*",
            "keyward.*",
            "keyward.env.prod.keys.*",
            "keyward.env.prod-1.keys.read",
            "keyward.audit.read",
            "a:b_c",
        ] {
            assert_eq!(check_grant(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a.",
            "a.*.b",
            "a*",
            "*.a",
            "a.**",
            "keyward.env.{env}.read",
            "a b",
            "é",
            "a/b",
        ] {
            assert!(check_grant(bad).is_err(), "{bad:?}");
        }
        assert!(check_grant(&"a".repeat(MAX_GRANT_LEN + 1)).is_err());
        assert!(check_grants(&[]).is_err());
        let many: Vec<String> = (0..=MAX_GRANTS).map(|i| format!("a{i}")).collect();
        assert!(check_grants(&many).is_err());
    }

    #[test]
    fn escalation_is_found() {
        let held = grants(&["keyward.env.prod.*", "keyward.admin.tokens.create"]);
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            first_not_held(&held, &v(&["keyward.env.prod.keys.*"])),
            None
        );
        assert_eq!(
            first_not_held(&held, &v(&["keyward.env.prod.keys.read", "keyward.env.*"])),
            Some("keyward.env.*")
        );
        assert_eq!(first_not_held(&held, &v(&["*"])), Some("*"));
        assert_eq!(
            first_not_held(&held, &v(&["keyward.admin.tokens.*"])),
            Some("keyward.admin.tokens.*"),
            "an exact grant does not cover its group"
        );
        assert_eq!(first_not_held(&grants(&["*"]), &v(&["*", "a.*"])), None);
        assert_eq!(
            first_not_held(&Grants::new(["*"], false), &v(&["*"])),
            Some("*"),
            "a '*' that covers nothing cannot hand on '*'"
        );
    }
}
