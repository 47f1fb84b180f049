//! API keys mapped to identities.
//!
//! A route with `api_keys = true` accepts, besides a token, a key in the
//! `api_key_header` (default `X-API-Key`). Each `[[api_key]]` of the
//! configuration maps one key to an identity: a subject, permissions, an
//! expiry, an optional rate limit and optionally the routes it may be used
//! on. The caller then gets the same identity headers and the same
//! permission checks as a token's caller: the key's identity is a
//! [`keyward_verify::Identity`] (issuer [`ISSUER`], client the key id),
//! built once at start.
//!
//! A key is `kwk_<id>_<secret>`: a 12-hex-digit id (not secret: it finds
//! the entry and names the key in logs and listings) and 32 random bytes
//! (base64url). The configuration holds only `sha256:<hex>` of the whole
//! key, never the key ([`generate`], written by `keyward gateway api-key
//! create`). A presented key is found by its id, then its SHA-256 is
//! compared with the stored one in constant time; only a key that matches
//! is then judged revoked, expired or used on a route it is not for, so a
//! wrong key learns nothing about the entry. The key itself is never
//! logged: the decision log names the key id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName};
use http::StatusCode;
use keyward_jose::claim_text;
use keyward_jose::crypto::{constant_time_eq, hex, random_bytes, random_text, sha256};
use keyward_verify::{Identity, SharedClock};
use serde::Deserialize;
use toml::Spanned;

use crate::config::{Checker, RateSpec, RouteConfig, RESERVED_HEADERS};
use crate::error::{ApiKeyError, StartError};
use crate::ratelimit::{Limiter, Rate};

/// The default header keys come in.
pub const DEFAULT_HEADER: &str = "x-api-key";
/// What every key starts with.
pub const KEY_PREFIX: &str = "kwk_";
/// Hex digits of a key id.
const ID_LEN: usize = 12;
/// base64url characters of a key's secret part (32 bytes).
const SECRET_LEN: usize = 43;
/// Length of a whole key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN;
/// The `issuer` of an API key's identity (the `X-Auth-Issuer` header).
pub const ISSUER: &str = "api-key";
/// `expires` of a key that never expires.
pub const NEVER: &str = "never";

/// One `[[api_key]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    id: Spanned<String>,
    hash: Spanned<String>,
    subject: Spanned<String>,
    #[serde(default)]
    permissions: Vec<Spanned<String>>,
    expires: Spanned<String>,
    rate_limit: Option<Spanned<String>>,
    routes: Option<Vec<Spanned<String>>>,
    created: Option<Spanned<String>>,
    revoked: Option<Spanned<String>>,
}

/// One configured key (its hash, never the key).
#[derive(Clone, Debug)]
pub struct ApiKeyConfig {
    /// The key id (12 hex digits).
    pub id: String,
    /// SHA-256 of the whole key.
    hash: [u8; 32],
    /// The subject it stands for.
    pub subject: String,
    /// The permissions it grants.
    pub permissions: Vec<String>,
    /// Unix seconds from which it is refused; `None`: never expires.
    pub expires_at: Option<i64>,
    /// Its own rate limit.
    pub rate_limit: Option<RateSpec>,
    /// Route names it may be used on (`None`: every route with `api_keys`).
    pub routes: Option<Vec<String>>,
    /// When it was created (RFC 3339), as written.
    pub created: Option<String>,
    /// When it was revoked (RFC 3339), as written.
    pub revoked: Option<String>,
}

/// The API keys of a configuration.
#[derive(Clone, Debug)]
pub struct ApiKeysConfig {
    /// The header keys come in.
    pub header: HeaderName,
    /// The keys, in file order.
    pub keys: Vec<ApiKeyConfig>,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        ApiKeysConfig {
            header: HeaderName::from_static(DEFAULT_HEADER),
            keys: Vec::new(),
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `sha256:<hex>` of `key`: what the configuration stores.
pub fn hash_text(key: &str) -> String {
    format!("sha256:{}", hex(&sha256(key.as_bytes())))
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let h = s.strip_prefix("sha256:")?;
    if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Resolves `api_key_header` and the `[[api_key]]` tables.
pub(crate) fn resolve(
    header: Option<&Spanned<String>>,
    raw: &[Spanned<RawKey>],
    routes: &[RouteConfig],
    c: &mut Checker<'_>,
) -> ApiKeysConfig {
    let mut out = ApiKeysConfig::default();
    if let Some(h) = header {
        match HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(name)
                if RESERVED_HEADERS.contains(&name.as_str())
                    || name.as_str().starts_with("proxy-") =>
            {
                c.at(
                    h,
                    format!(
                        "api_key_header: {:?} is a header the gateway manages itself",
                        h.get_ref()
                    ),
                    "use a header of its own, such as \"X-API-Key\"",
                );
            }
            Ok(name) => out.header = name,
            Err(_) => c.at(
                h,
                format!("api_key_header: {:?} is not a header name", h.get_ref()),
                "write a header name such as \"X-API-Key\"",
            ),
        }
    }
    let key_routes: Vec<&str> = routes
        .iter()
        .filter(|r| r.api_keys)
        .map(|r| r.name.as_str())
        .collect();
    for k in raw {
        if let Some(key) = resolve_key(k.get_ref(), &key_routes, c) {
            if out.keys.iter().any(|o| o.id == key.id) {
                let id = &k.get_ref().id;
                c.at(
                    id,
                    format!("api_key id {:?} is used twice", id.get_ref()),
                    "remove one of the two [[api_key]] tables (create keys with keyward gateway api-key create)",
                );
                continue;
            }
            out.keys.push(key);
        }
    }
    out
}

fn resolve_key(k: &RawKey, key_routes: &[&str], c: &mut Checker<'_>) -> Option<ApiKeyConfig> {
    let mut ok = true;
    let made_by = "keys are written by keyward gateway api-key create; do not edit id and hash";
    if !is_id(k.id.get_ref()) {
        c.at(
            &k.id,
            format!(
                "api_key id {:?} is not 12 lower-case hex digits",
                k.id.get_ref()
            ),
            made_by,
        );
        ok = false;
    }
    let hash = parse_hash(k.hash.get_ref());
    if hash.is_none() {
        c.at(&k.hash, "api_key hash is not \"sha256:\" and 64 lower-case hex digits (the key itself never goes in this file)", made_by);
    }
    if claim_text::check_value(k.subject.get_ref()).is_err() {
        c.at(
            &k.subject,
            format!(
                "api_key subject {:?} cannot be a header value",
                k.subject.get_ref()
            ),
            "write a non-empty subject without control characters, e.g. \"billing-batch\"",
        );
        ok = false;
    }
    for p in &k.permissions {
        if claim_text::check_word(p.get_ref()).is_err() {
            c.at(
                p,
                format!("api_key permission {:?} is not one word", p.get_ref()),
                "write each permission as its own string without spaces, e.g. [\"reports.read\", \"orders.*\"]",
            );
            ok = false;
        }
    }
    let expires_at = match k.expires.get_ref().as_str() {
        NEVER => None,
        text => match humantime::parse_rfc3339(text) {
            Ok(t) => Some(unix(t)),
            Err(_) => {
                c.at(
                    &k.expires,
                    format!("api_key expires {text:?} is not an RFC 3339 time or \"never\""),
                    "write expires = \"2027-01-31T00:00:00Z\" or \"never\"",
                );
                ok = false;
                None
            }
        },
    };
    let rate_limit = k
        .rate_limit
        .as_ref()
        .and_then(|r| match Rate::parse(r.get_ref()) {
            Ok(rate) => Some(RateSpec {
                text: r.get_ref().clone(),
                rate,
            }),
            Err(e) => {
                c.at(
                    r,
                    format!("api_key rate_limit: {e}"),
                    "write a rate such as \"100/s\", \"6000/m\" or \"10/h\"",
                );
                ok = false;
                None
            }
        });
    if let Some(list) = &k.routes {
        for r in list {
            if !key_routes.contains(&r.get_ref().as_str()) {
                c.at(
                    r,
                    format!("api_key route {:?} is not a route with api_keys = true", r.get_ref()),
                    format!(
                        "name a route (its name, or its path when it has none) that accepts API keys: {}",
                        if key_routes.is_empty() { "none does yet; add api_keys = true to a route".to_string() } else { key_routes.join(", ") }
                    ),
                );
                ok = false;
            }
        }
    }
    for t in [&k.created, &k.revoked].into_iter().flatten() {
        if humantime::parse_rfc3339(t.get_ref()).is_err() {
            c.at(
                t,
                format!("{:?} is not an RFC 3339 time", t.get_ref()),
                "write a time such as \"2026-12-03T07:00:00Z\"",
            );
            ok = false;
        }
    }
    let (true, Some(hash)) = (ok, hash) else {
        return None;
    };
    Some(ApiKeyConfig {
        id: k.id.get_ref().clone(),
        hash,
        subject: k.subject.get_ref().clone(),
        permissions: k.permissions.iter().map(|p| p.get_ref().clone()).collect(),
        expires_at,
        rate_limit,
        routes: k
            .routes
            .as_ref()
            .map(|l| l.iter().map(|r| r.get_ref().clone()).collect()),
        created: k.created.as_ref().map(|t| t.get_ref().clone()),
        revoked: k.revoked.as_ref().map(|t| t.get_ref().clone()),
    })
}

impl ApiKeyConfig {
    /// `active`, `revoked` or `expired` at `now` (unix seconds).
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| now >= e) {
            "expired"
        } else {
            "active"
        }
    }

    /// `expires` as written (RFC 3339 or `never`).
    pub fn expires_text(&self) -> String {
        self.expires_at.map_or(NEVER.to_string(), |e| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(u64::try_from(e).unwrap_or(0)))
        })
    }
}

impl ApiKeysConfig {
    /// Lines for `--check` (ids, subjects and states; never hashes).
    pub(crate) fn describe(&self, s: &mut String) {
        use std::fmt::Write as _;
        if self.keys.is_empty() {
            return;
        }
        let now = unix(SystemTime::now());
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "api keys ({}, in header {}):",
            self.keys.len(),
            self.header
        );
        for k in &self.keys {
            let _ = writeln!(
                s,
                "  {}  {}  subject {}  permissions [{}]  expires {}{}{}",
                k.id,
                k.state(now),
                k.subject,
                k.permissions.join(" "),
                k.expires_text(),
                k.rate_limit
                    .as_ref()
                    .map_or(String::new(), |r| format!("  rate_limit {}", r.text)),
                k.routes
                    .as_ref()
                    .map_or(String::new(), |r| format!("  routes [{}]", r.join(", "))),
            );
        }
    }
}

// ---- the request path --------------------------------------------------------

/// One key, ready to judge requests.
pub(crate) struct Key {
    hash: [u8; 32],
    /// The caller it stands for (built once).
    pub identity: Arc<Identity>,
    expires_at: Option<i64>,
    revoked: bool,
    routes: Option<Box<[String]>>,
    /// Its own rate limit.
    pub limiter: Option<Limiter>,
}

/// Why a presented key is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not the shape of a key, or the header repeated.
    Malformed,
    /// Both a key and an `Authorization` header.
    Ambiguous,
    /// No key has this id.
    Unknown,
    /// The id is known, the key does not match its hash.
    Mismatch,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
    /// Not for this route.
    WrongRoute,
}

impl Refusal {
    /// The decision log's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Malformed => "api_key_malformed",
            Refusal::Ambiguous => "api_key_and_token",
            Refusal::Unknown => "api_key_unknown",
            Refusal::Mismatch => "api_key_mismatch",
            Refusal::Revoked => "api_key_revoked",
            Refusal::Expired => "api_key_expired",
            Refusal::WrongRoute => "api_key_wrong_route",
        }
    }

    /// The status answered.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::WrongRoute => StatusCode::FORBIDDEN,
            Refusal::Ambiguous => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// `(error, error_description)` of the JSON answer. An unknown id and
    /// a wrong key read the same.
    pub fn answer(self) -> (&'static str, &'static str) {
        match self {
            Refusal::Malformed | Refusal::Unknown | Refusal::Mismatch => {
                ("invalid_api_key", "the API key is not valid")
            }
            Refusal::Ambiguous => (
                "invalid_request",
                "send either an API key or an Authorization header, not both",
            ),
            Refusal::Revoked => ("invalid_api_key", "the API key has been revoked"),
            Refusal::Expired => ("invalid_api_key", "the API key has expired"),
            Refusal::WrongRoute => ("forbidden", "the API key is not valid for this route"),
        }
    }
}

/// The configured keys by id, and the clock they expire by.
pub(crate) struct ApiKeyStore {
    /// The header keys come in.
    pub header: HeaderName,
    keys: HashMap<Box<str>, Key>,
    clock: SharedClock,
}

impl ApiKeyStore {
    /// The keys of `config`, each with its identity and limiter.
    pub fn new(config: &ApiKeysConfig, clock: SharedClock) -> Result<ApiKeyStore, StartError> {
        let mut keys = HashMap::with_capacity(config.keys.len());
        for k in &config.keys {
            let mut claims = serde_json::json!({
                "iss": ISSUER,
                "sub": k.subject,
                "client_id": k.id,
                "permissions": k.permissions,
            });
            if let Some(e) = k.expires_at {
                claims["exp"] = e.into();
            }
            let payload = serde_json::to_vec(&claims).unwrap_or_default();
            let identity = keyward_jose::dangerous::claims_without_token(payload)
                .map_err(|e| e.to_string())
                .and_then(|c| Identity::from_claims(c, None).map_err(|e| e.to_string()))
                .map_err(|reason| StartError::ApiKey {
                    id: k.id.clone(),
                    reason,
                })?;
            // Header values are built and checked now, not on a request.
            let _ = identity.header_values();
            let limiter = k
                .rate_limit
                .as_ref()
                .map(|r| Limiter::new(r.rate, (r.rate.per_sec.ceil() as u32).max(1), 1));
            keys.insert(
                k.id.clone().into_boxed_str(),
                Key {
                    hash: k.hash,
                    identity: Arc::new(identity),
                    expires_at: k.expires_at,
                    revoked: k.revoked.is_some(),
                    routes: k.routes.clone().map(Vec::into_boxed_slice),
                    limiter,
                },
            );
        }
        Ok(ApiKeyStore {
            header: config.header.clone(),
            keys,
            clock,
        })
    }

    /// The key presented in `headers` for route `route`: `None` when the
    /// header is absent; else the key, or why it is refused and the id it
    /// claimed (when it had the shape of a key).
    pub fn check<'h>(
        &self,
        headers: &'h HeaderMap,
        route: &str,
    ) -> Option<Result<&Key, (Option<&'h str>, Refusal)>> {
        let mut values = headers.get_all(&self.header).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return Some(Err((None, Refusal::Malformed)));
        }
        let Some(id) = key_id(value.as_bytes()) else {
            return Some(Err((None, Refusal::Malformed)));
        };
        if headers.contains_key(http::header::AUTHORIZATION) {
            return Some(Err((Some(id), Refusal::Ambiguous)));
        }
        Some(
            self.judge(id, value.as_bytes(), route)
                .map_err(|r| (Some(id), r)),
        )
    }

    fn judge(&self, id: &str, presented: &[u8], route: &str) -> Result<&Key, Refusal> {
        let key = self.keys.get(id).ok_or(Refusal::Unknown)?;
        if !constant_time_eq(&sha256(presented), &key.hash) {
            return Err(Refusal::Mismatch);
        }
        if key.revoked {
            return Err(Refusal::Revoked);
        }
        if key.expires_at.is_some_and(|e| self.clock.now() >= e) {
            return Err(Refusal::Expired);
        }
        if key
            .routes
            .as_ref()
            .is_some_and(|r| !r.iter().any(|n| n == route))
        {
            return Err(Refusal::WrongRoute);
        }
        Ok(key)
    }
}

/// The id of a presented key when it has a key's exact shape:
/// `kwk_`, 12 lower-case hex digits, `_`, 43 base64url characters.
fn key_id(v: &[u8]) -> Option<&str> {
    if v.len() != KEY_LEN || !v.starts_with(KEY_PREFIX.as_bytes()) {
        return None;
    }
    let id_end = KEY_PREFIX.len() + ID_LEN;
    let id = std::str::from_utf8(&v[KEY_PREFIX.len()..id_end]).ok()?;
    let secret_ok = v[id_end + 1..]
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    (is_id(id) && v[id_end] == b'_' && secret_ok).then_some(id)
}

// ---- making and revoking keys (the CLI) --------------------------------------

/// A new key: shown once, then only its hash is kept.
pub struct NewKey {
    /// The key id.
    pub id: String,
    /// The whole key, to hand to the caller.
    pub key: String,
    /// `sha256:<hex>` of the key, for the configuration.
    pub hash: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Makes a key from the system's secure random generator (256 bits).
pub fn generate() -> NewKey {
    let id = hex(&random_bytes::<{ ID_LEN / 2 }>());
    let key = format!("{KEY_PREFIX}{id}_{}", random_text::<32>());
    let hash = hash_text(&key);
    NewKey { id, key, hash }
}

/// What `api-key create` records about a key besides its id and hash.
#[derive(Clone, Debug, Default)]
pub struct KeySpec {
    /// The subject.
    pub subject: String,
    /// The permissions.
    pub permissions: Vec<String>,
    /// `--expires`: a duration from now (`90d`), an RFC 3339 time, or `never`.
    pub expires: String,
    /// A rate such as `100/s`.
    pub rate_limit: Option<String>,
    /// Route names it is limited to.
    pub routes: Option<Vec<String>>,
}

/// `--expires` as the configuration writes it: `never`, or an RFC 3339
/// time (a duration counts from `now`).
pub fn expiry_text(text: &str, now: SystemTime) -> Result<String, ApiKeyError> {
    let text = text.trim();
    if text == NEVER {
        return Ok(NEVER.into());
    }
    if let Ok(t) = humantime::parse_rfc3339(text) {
        return Ok(rfc3339(t));
    }
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(rfc3339(now + d)),
        _ => Err(ApiKeyError::Expires(text.to_string())),
    }
}

fn edit(text: &str) -> Result<toml_edit::DocumentMut, ApiKeyError> {
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| ApiKeyError::Toml(e.to_string()))
}

/// `text` with one more `[[api_key]]` table for `key` (its id and hash
/// only) and `spec`; the rest of the file is kept as written.
pub fn add_to_config(
    text: &str,
    key: &NewKey,
    spec: &KeySpec,
    now: SystemTime,
) -> Result<String, ApiKeyError> {
    use toml_edit::{value, Array, ArrayOfTables, Item, Table};
    let mut doc = edit(text)?;
    let expires = expiry_text(&spec.expires, now)?;
    let list = doc
        .entry("api_key")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or(ApiKeyError::NotATableArray)?;
    let mut t = Table::new();
    t["id"] = value(key.id.as_str());
    t["hash"] = value(key.hash.as_str());
    t["subject"] = value(spec.subject.as_str());
    t["permissions"] = value(
        spec.permissions
            .iter()
            .map(String::as_str)
            .collect::<Array>(),
    );
    t["expires"] = value(expires);
    if let Some(r) = &spec.rate_limit {
        t["rate_limit"] = value(r.as_str());
    }
    if let Some(routes) = &spec.routes {
        t["routes"] = value(routes.iter().map(String::as_str).collect::<Array>());
    }
    t["created"] = value(rfc3339(now));
    list.push(t);
    Ok(doc.to_string())
}

/// `text` with key `id` marked revoked at `now`; the rest kept as written.
pub fn revoke_in_config(text: &str, id: &str, now: SystemTime) -> Result<String, ApiKeyError> {
    let mut doc = edit(text)?;
    let table = doc
        .get_mut("api_key")
        .and_then(|i| i.as_array_of_tables_mut())
        .and_then(|list| {
            list.iter_mut()
                .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
        })
        .ok_or_else(|| ApiKeyError::NoSuchKey(id.to_string()))?;
    if table.contains_key("revoked") {
        return Err(ApiKeyError::AlreadyRevoked(id.to_string()));
    }
    table["revoked"] = toml_edit::value(rfc3339(now));
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_shape_and_a_matching_hash() {
        let a = generate();
        let b = generate();
        assert_ne!(a.key, b.key);
        assert_eq!(a.key.len(), KEY_LEN);
        assert_eq!(key_id(a.key.as_bytes()), Some(a.id.as_str()));
        assert_eq!(parse_hash(&a.hash), Some(sha256(a.key.as_bytes())));
        assert!(!format!("{a:?}").contains(&a.key[KEY_PREFIX.len() + ID_LEN..]));
    }

    #[test]
    fn only_the_exact_shape_is_a_key() {
        let k = generate().key;
        let mut bad = vec![
            String::new(),
            k[..KEY_LEN - 1].to_string(),
            format!("{k}A"),
            k.replacen("kwk_", "kwx_", 1),
            k.to_uppercase(),
            format!(
                "{}={}",
                &k[..KEY_PREFIX.len() + ID_LEN],
                &k[KEY_PREFIX.len() + ID_LEN + 1..]
            ),
        ];
        bad.push(format!("{}+", &k[..KEY_LEN - 1]));
        for b in bad {
            assert_eq!(key_id(b.as_bytes()), None, "{b}");
        }
    }

    /// The hash comparison is the constant-time one (aws-lc's), never `==`
    /// on the digests.
    #[test]
    fn the_hash_is_compared_in_constant_time() {
        let src = include_str!("api_keys.rs");
        let judge = &src[src.find("fn judge").unwrap()..];
        let judge = &judge[..judge.find("\n    }\n").unwrap()];
        assert!(
            judge.contains("constant_time_eq(&sha256(presented), &key.hash)"),
            "{judge}"
        );
        assert!(!judge.contains("== key.hash") && !judge.contains("key.hash =="));
    }

    #[test]
    fn expiry_texts() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(expiry_text("never", now).unwrap(), "never");
        assert_eq!(expiry_text("1d", now).unwrap(), "2027-01-16T08:00:00Z");
        assert_eq!(
            expiry_text("2030-01-01T00:00:00Z", now).unwrap(),
            "2030-01-01T00:00:00Z"
        );
        for bad in ["", "0s", "soon", "2030-01-01"] {
            assert!(expiry_text(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn edits_keep_the_rest_of_the_file() {
        let text = "# my gateway\nlisten = \"127.0.0.1:1\" # port\n\n[[route]]\npath = \"/a\" # A\nupstream = \"http://127.0.0.1:2\"\napi_keys = true\n";
        let k = generate();
        let spec = KeySpec {
            subject: "batch".into(),
            permissions: vec!["a.read".into()],
            expires: "never".into(),
            rate_limit: Some("5/s".into()),
            routes: None,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let out = add_to_config(text, &k, &spec, now).unwrap();
        assert!(out.starts_with(text), "{out}");
        assert!(out.contains(&k.hash) && !out.contains(&k.key), "{out}");
        let out2 = revoke_in_config(&out, &k.id, now).unwrap();
        assert!(
            out2.contains("revoked = \"2027-01-15T08:00:00Z\""),
            "{out2}"
        );
        assert!(matches!(
            revoke_in_config(&out2, &k.id, now),
            Err(ApiKeyError::AlreadyRevoked(_))
        ));
        assert!(matches!(
            revoke_in_config(&out2, "000000000000", now),
            Err(ApiKeyError::NoSuchKey(_))
        ));
        assert!(matches!(
            add_to_config("api_key = 1\n", &k, &spec, now),
            Err(ApiKeyError::NotATableArray)
        ));
        assert!(matches!(
            add_to_config("x = [", &k, &spec, now),
            Err(ApiKeyError::Toml(_))
        ));
    }
}
