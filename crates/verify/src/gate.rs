//! The [`Gate`]: trusted issuers, their key caches and policies, the
//! verified-token cache and the revocation list, behind one `verify` call.

use std::sync::Arc;

use http::HeaderMap;
use keyward_jose::{dangerous, verify_jwt, Error as JoseError, TokenError, Validation};
use metrics::counter;

use crate::clock::{Clock, SystemClock};
use crate::error::VerifyError;
use crate::identity::Identity;
use crate::jwks_cache::JwksCache;
use crate::policy::IssuerPolicy;
use crate::revocation::RevocationList;
use crate::token_cache::{Entry, Key, TokenCache};

/// One trusted issuer: its policy, the validation derived from it, its keys.
#[derive(Debug)]
pub struct Trusted {
    pub policy: IssuerPolicy,
    pub validation: Validation,
    pub keys: JwksCache,
}

struct Inner {
    issuers: Vec<Trusted>,
    cache: Option<TokenCache>,
    revoked: Arc<RevocationList>,
    clock: Arc<dyn Clock>,
}

/// Verifies bearer tokens from a fixed list of trusted issuers. Cheap to
/// clone; clones share caches.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("issuers", &self.inner.issuers.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Gate`].
pub struct GateBuilder {
    issuers: Vec<IssuerPolicy>,
    cache_capacity: usize,
    revoked: Option<Arc<RevocationList>>,
    clock: Arc<dyn Clock>,
}

impl Default for GateBuilder {
    fn default() -> Self {
        GateBuilder {
            issuers: Vec::new(),
            cache_capacity: 10_000,
            revoked: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl GateBuilder {
    /// Trusts an issuer.
    pub fn issuer(mut self, policy: IssuerPolicy) -> Self {
        self.issuers.push(policy);
        self
    }

    /// Size of the verified-token cache; 0 turns it off (default 10,000).
    pub fn token_cache(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Shares a revocation list (for example one fed by the gateway's poller).
    pub fn revocations(mut self, list: Arc<RevocationList>) -> Self {
        self.revoked = Some(list);
        self
    }

    /// The clock tokens are judged against (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the gate; fails on an invalid key-source URL or a repeated issuer.
    pub fn build(self) -> Result<Gate, String> {
        let mut issuers: Vec<Trusted> = Vec::new();
        for policy in self.issuers {
            if issuers.iter().any(|t| t.policy.issuer == policy.issuer) {
                return Err(format!("issuer {} is configured twice", policy.issuer));
            }
            let keys = JwksCache::new(
                &policy.issuer,
                policy.source.clone(),
                policy.cache.clone(),
                &policy.algorithms,
            )?;
            issuers.push(Trusted {
                validation: policy.validation(),
                policy,
                keys,
            });
        }
        if issuers.is_empty() {
            return Err("at least one trusted issuer is required".into());
        }
        Ok(Gate {
            inner: Arc::new(Inner {
                issuers,
                cache: (self.cache_capacity > 0).then(|| TokenCache::new(self.cache_capacity)),
                revoked: self.revoked.unwrap_or_default(),
                clock: self.clock,
            }),
        })
    }
}

/// The bearer token of an `Authorization` header (RFC 6750 §2.1): exactly one
/// header, scheme `Bearer` (any case), one space, a token68 value.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, VerifyError> {
    token68(bearer_value(headers)?)
}

/// What follows `Bearer ` in the one `Authorization` header, not yet
/// checked to be a token68 value ([`token68`]).
fn bearer_value(headers: &HeaderMap) -> Result<&[u8], VerifyError> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Err(VerifyError::MissingToken);
    };
    if all.next().is_some() {
        return Err(VerifyError::MalformedHeader);
    }
    let bytes = value.as_bytes();
    let Some(space) = bytes.iter().position(|&b| b == b' ') else {
        return Err(VerifyError::MalformedHeader);
    };
    let (scheme, token) = (&bytes[..space], &bytes[space + 1..]);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        // Another scheme (Basic, DPoP...): no bearer token was presented,
        // unless the value is not even a visible-ASCII header value.
        return Err(match value.to_str() {
            Ok(_) => VerifyError::MissingToken,
            Err(_) => VerifyError::MalformedHeader,
        });
    }
    Ok(token)
}

/// `token` as text when it is a non-empty token68 value.
fn token68(token: &[u8]) -> Result<&str, VerifyError> {
    if token.is_empty() || !is_token68(token) {
        return Err(VerifyError::MalformedHeader);
    }
    // Every byte is ASCII, so this cannot fail.
    std::str::from_utf8(token).map_err(|_| VerifyError::MalformedHeader)
}

/// Whether every byte is a token68 character (RFC 7235 §2.1: letters,
/// digits, `-._~+/=`). A token is read on every request, so whole 32-byte
/// blocks are checked without branches, which the compiler turns into a
/// few vector instructions per block.
fn is_token68(bytes: &[u8]) -> bool {
    #[inline(always)]
    fn bad(c: u8) -> u8 {
        let letter = (c | 0x20).wrapping_sub(b'a') < 26;
        let digit = c.wrapping_sub(b'0') < 10;
        let other =
            (c == b'-') | (c == b'.') | (c == b'_') | (c == b'~') | (c == b'+') | (c == b'/');
        u8::from(!(letter | digit | other | (c == b'=')))
    }
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(0, |acc, &c| acc | bad(c)) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&c| bad(c) == 0)
}

impl Gate {
    /// Starts building a gate.
    pub fn builder() -> GateBuilder {
        GateBuilder::default()
    }

    /// The trusted issuers.
    pub fn issuers(&self) -> &[Trusted] {
        &self.inner.issuers
    }

    /// The revocation list consulted on every request.
    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.inner.revoked
    }

    /// The verified-token cache, when on.
    pub fn token_cache(&self) -> Option<&TokenCache> {
        self.inner.cache.as_ref()
    }

    /// The gate's current time (unix seconds).
    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// Fetches every issuer's keys once; returns the failures (issuer, error).
    pub async fn warm_up(&self) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for t in &self.inner.issuers {
            if let Err(e) = t.keys.refresh().await {
                failed.push((t.policy.issuer.clone(), e));
            }
        }
        failed
    }

    /// Starts one background refresher per issuer (see
    /// [`JwksCache::spawn_refresher`]). Abort the handles to stop them.
    pub fn spawn_refreshers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.inner
            .issuers
            .iter()
            .map(|t| t.keys.spawn_refresher())
            .collect()
    }

    /// Verifies the bearer token of a request's headers, as [`bearer_token`]
    /// reads it and [`Gate::verify`] checks it. A token the verified-token
    /// cache holds is found by its bytes before they are checked as token68:
    /// the cached copy passed that check when it was verified, and the same
    /// bytes pass it again.
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<Arc<Identity>, VerifyError> {
        self.verify_bytes(bearer_value(headers)?, token68).await
    }

    /// Verifies a compact JWT access token: structure, issuer, key, algorithm,
    /// signature, claims and policy (DESIGN.md rule 1), and revocation.
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, VerifyError> {
        self.verify_bytes(token.as_bytes(), |_| Ok(token)).await
    }

    /// The cached verification of the token `raw`, else `raw` read as a
    /// token by `as_token` and verified from scratch.
    async fn verify_bytes<'t>(
        &self,
        raw: &'t [u8],
        as_token: impl FnOnce(&'t [u8]) -> Result<&'t str, VerifyError>,
    ) -> Result<Arc<Identity>, VerifyError> {
        match self.cached(raw) {
            Ok(identity) => Ok(identity),
            Err(key) => self.verify_fresh(as_token(raw)?, key).await,
        }
    }

    /// The cached verification of exactly `token`, while it may still be
    /// served; otherwise the key to store its verification under (`None`
    /// when the cache is off).
    fn cached(&self, token: &[u8]) -> Result<Arc<Identity>, Option<Key>> {
        let Some(cache) = &self.inner.cache else {
            return Err(None);
        };
        let key = cache.key(token);
        if let Some(entry) = cache.get(key, token) {
            if self.still_valid(key, token, &entry) {
                counter!("keyward_gate_token_cache_total", "result" => "hit").increment(1);
                return Ok(entry.identity);
            }
            cache.remove(key);
        }
        Err(Some(key))
    }

    /// Verifies `token` from scratch and, with a cache key, caches the result
    /// (and counts a cache miss: a header that is not even a token68 value
    /// is not counted as a lookup).
    async fn verify_fresh(
        &self,
        token: &str,
        key: Option<Key>,
    ) -> Result<Arc<Identity>, VerifyError> {
        if key.is_some() {
            counter!("keyward_gate_token_cache_total", "result" => "miss").increment(1);
        }
        let (identity, issuer, generation) = self.verify_uncached(token).await?;
        if let (Some(cache), Some(key)) = (&self.inner.cache, key) {
            cache.insert(
                key,
                token,
                Entry {
                    identity: identity.clone(),
                    issuer,
                    generation,
                },
            );
        }
        Ok(identity)
    }

    /// Whether a cached verification may still be served: before `exp`, key
    /// still published, `jti` not revoked.
    fn still_valid(&self, key: Key, token: &[u8], e: &Entry) -> bool {
        let id = &e.identity;
        if self.inner.clock.now() >= id.expires_at {
            return false;
        }
        if id
            .jti
            .as_deref()
            .is_some_and(|j| self.inner.revoked.is_revoked(j))
        {
            return false;
        }
        let Some(snap) = self.inner.issuers[e.issuer].keys.current() else {
            return false;
        };
        if snap.generation == e.generation {
            return true;
        }
        match &id.kid {
            Some(kid) if snap.keys.get(kid).is_some() => {
                if let Some(cache) = &self.inner.cache {
                    cache.touch(key, token, snap.generation);
                }
                true
            }
            _ => false,
        }
    }

    /// The issuer whose key set already verified these exact header bytes,
    /// when no other issuer may publish the same kid (an issuer whose keys
    /// are not loaded might). A hint only: the chosen policy still checks
    /// `iss` and the signature, and a refusal is retried by `iss`.
    fn remembered_issuer(&self, token: &str) -> Option<usize> {
        let issuers = &self.inner.issuers;
        for (i, t) in issuers.iter().enumerate() {
            let Some(snap) = t.keys.current() else {
                continue;
            };
            let Some(kid) = snap.keys.known_header_kid(token) else {
                continue;
            };
            let unique = issuers.iter().enumerate().all(|(j, other)| {
                j == i
                    || other
                        .keys
                        .current()
                        .is_some_and(|s| s.keys.get(kid).is_none())
            });
            if unique {
                return Some(i);
            }
        }
        None
    }

    /// The issuer the token's `iss` names, read unverified only to choose
    /// whose keys and policy to verify with (that policy checks it again).
    /// The payload is read by the same strict parser verification uses, so
    /// the choice never refuses what verification would accept.
    fn issuer_by_iss(&self, token: &str) -> Result<usize, VerifyError> {
        let payload = token
            .split('.')
            .nth(1)
            .and_then(keyward_jose::b64::decode)
            .ok_or(VerifyError::Invalid(JoseError::Token(TokenError::Base64(
                "payload",
            ))))?;
        let claims = keyward_jose::Claims::parse(payload, &[])?;
        let iss = claims.iss().ok_or(VerifyError::UntrustedIssuer)?;
        self.inner
            .issuers
            .iter()
            .position(|t| t.policy.issuer == iss)
            .ok_or(VerifyError::UntrustedIssuer)
    }

    async fn verify_uncached(
        &self,
        token: &str,
    ) -> Result<(Arc<Identity>, usize, u64), VerifyError> {
        if self.inner.issuers.len() == 1 {
            return self.verify_with(0, token).await;
        }
        if let Some(i) = self.remembered_issuer(token) {
            match self.verify_with(i, token).await {
                Ok(done) => return Ok(done),
                // Refused under the remembered issuer: perhaps another one
                // has since published the same kid. Decide by `iss`, as if
                // nothing had been remembered (and refuse as that would).
                Err(e) => match self.issuer_by_iss(token) {
                    Ok(j) if j != i => {}
                    Ok(_) => return Err(e),
                    Err(by_iss) => return Err(by_iss),
                },
            }
        }
        let i = self.issuer_by_iss(token)?;
        self.verify_with(i, token).await
    }

    /// Verifies `token` with trusted issuer `idx`'s keys and policy.
    async fn verify_with(
        &self,
        idx: usize,
        token: &str,
    ) -> Result<(Arc<Identity>, usize, u64), VerifyError> {
        let t = &self.inner.issuers[idx];
        let now = self.inner.clock.now();
        let mut snap = t.keys.keys().await?;
        let verified = match verify_jwt(token, &snap.keys, &t.validation, now) {
            Err(JoseError::Token(TokenError::UnknownKid(_))) => {
                let (header, _) = dangerous::decode_unverified(token)?;
                let kid = header
                    .get("kid")
                    .and_then(|k| k.as_str())
                    .unwrap_or_default();
                snap = t.keys.refetch_for_unknown(kid, snap.generation).await?;
                verify_jwt(token, &snap.keys, &t.validation, now)?
            }
            other => other?,
        };
        if let Some(jti) = verified.claims.jti() {
            if self.inner.revoked.is_revoked(jti) {
                return Err(VerifyError::Revoked);
            }
        }
        let mut identity = Identity::from_claims(verified.claims, verified.header.kid.clone())?;
        identity.allow_wildcard_all = t.policy.allow_wildcard_all;
        Ok((Arc::new(identity), idx, snap.generation))
    }
}

#[cfg(test)]
mod tests {
    use super::is_token68;

    #[test]
    fn token68_is_exactly_its_grammar() {
        let spec = |c: u8| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c);
        for c in 0..=255u8 {
            // Alone, and at every position of a run longer than one chunk.
            assert_eq!(is_token68(&[c]), spec(c), "byte {c:#04x}");
            for at in [0, 31, 32, 33, 69] {
                let mut run = vec![b'a'; 70];
                run[at] = c;
                assert_eq!(is_token68(&run), spec(c), "byte {c:#04x} at {at}");
            }
        }
    }
}
