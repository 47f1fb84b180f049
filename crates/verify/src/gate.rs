//! The [`Gate`]: trusted issuers, their key caches and policies, the
//! verified-token cache and the revocation list, behind one `verify` call.

use std::sync::Arc;

use http::HeaderMap;
use keyward_jose::{dangerous, Error as JoseError, TokenError, UnverifiedToken, Validation};
use metrics::counter;

use crate::bearer::{b64token, bearer_value, credential, Scheme};
use crate::clock::{Clock, SystemClock};
use crate::dpop::{proof_header, DpopPolicy, PresentedToken, ProofTarget, SenderConstraint};
use crate::error::DpopRefusal;
use crate::error::{BuildError, JwksError, VerifyError};
use crate::identity::Identity;
use crate::jwks_cache::{JwksCache, Snapshot};
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
    dpop: DpopPolicy,
}

/// The request a token is presented with, for the checks that depend on it
/// (a DPoP proof is made for one method and URI).
#[derive(Clone, Copy, Debug)]
pub struct RequestTarget<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request's absolute URI as the client addressed it (the gateway's
    /// public origin and the path; query and fragment are ignored).
    pub uri: &'a str,
    /// A sender constraint this resource requires of every token (on top
    /// of any its issuer's policy requires).
    pub require: Option<SenderConstraint>,
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
    dpop: DpopPolicy,
}

impl Default for GateBuilder {
    fn default() -> Self {
        GateBuilder {
            issuers: Vec::new(),
            cache_capacity: 10_000,
            revoked: None,
            clock: Arc::new(SystemClock),
            dpop: DpopPolicy::default(),
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

    /// How DPoP proofs are checked (default: [`DpopPolicy::default`], an
    /// in-memory replay cache per gate).
    pub fn dpop(mut self, policy: DpopPolicy) -> Self {
        self.dpop = policy;
        self
    }

    /// Builds the gate; fails on an invalid key-source URL or a repeated issuer.
    pub fn build(self) -> Result<Gate, BuildError> {
        let mut issuers: Vec<Trusted> = Vec::new();
        for policy in self.issuers {
            if issuers.iter().any(|t| t.policy.issuer == policy.issuer) {
                return Err(BuildError::DuplicateIssuer(policy.issuer));
            }
            let keys = JwksCache::new(
                &policy.issuer,
                policy.source.clone(),
                policy.cache.clone(),
                &policy.algorithms,
            )
            .map_err(|source| BuildError::Keys {
                issuer: policy.issuer.clone(),
                source,
            })?;
            issuers.push(Trusted {
                validation: policy.validation(),
                policy,
                keys,
            });
        }
        if issuers.is_empty() {
            return Err(BuildError::NoIssuer);
        }
        Ok(Gate {
            inner: Arc::new(Inner {
                issuers,
                cache: (self.cache_capacity > 0).then(|| TokenCache::new(self.cache_capacity)),
                revoked: self.revoked.unwrap_or_default(),
                clock: self.clock,
                dpop: self.dpop,
            }),
        })
    }
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
    pub async fn warm_up(&self) -> Vec<(String, JwksError)> {
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

    /// Verifies the bearer token of a request's headers, as
    /// [`crate::bearer_token`] reads it and [`Gate::verify`] checks it. A
    /// token the verified-token cache holds is found by its bytes before they
    /// are checked as a `b64token`: the cached copy passed that check when it
    /// was verified, and the same bytes pass it again. A token bound to a
    /// DPoP key is refused ([`VerifyError::BoundTokenAsBearer`]): it needs
    /// its proof, which [`Gate::verify_request`] checks.
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<Arc<Identity>, VerifyError> {
        let id = self
            .verify_bytes(bearer_value(headers)?, |t| Ok(b64token(t)?))
            .await?;
        if id.cnf_jkt.is_some() {
            return Err(VerifyError::BoundTokenAsBearer);
        }
        Ok(id)
    }

    /// The DPoP proof policy.
    pub fn dpop(&self) -> &DpopPolicy {
        &self.inner.dpop
    }

    /// Verifies the token of a request, `Bearer` or `DPoP` (RFC 9449 §7.1),
    /// and the sender constraint it carries or `target` and its issuer
    /// require:
    ///
    /// - a token bound to a DPoP key (`cnf.jkt`) is accepted only as
    ///   `Authorization: DPoP` with a `DPoP` proof that passes every check
    ///   of [`DpopPolicy::check`] for this method and URI, made by that key
    ///   and carrying the token's hash (`ath`); as `Bearer` it is refused;
    /// - a `DPoP` credential whose token is bound to no key is refused;
    /// - where DPoP is required, an unbound token is refused.
    ///
    /// The proof is checked on every request, whether the token's
    /// verification came from the verified-token cache or not: the cache
    /// holds what the token says, never that a proof was seen.
    pub async fn verify_request(
        &self,
        headers: &HeaderMap,
        target: &RequestTarget<'_>,
    ) -> Result<Arc<Identity>, VerifyError> {
        let (scheme, raw) = credential(headers)?;
        let id = self.verify_bytes(raw, |t| Ok(b64token(t)?)).await?;
        let required = target.require.or_else(|| {
            self.inner
                .issuers
                .iter()
                .find(|t| t.policy.issuer == id.issuer)
                .and_then(|t| t.policy.sender_constraint)
        });
        match (scheme, id.cnf_jkt.as_deref()) {
            (Scheme::Bearer, Some(_)) => Err(VerifyError::BoundTokenAsBearer),
            (Scheme::Bearer, None) => match required {
                Some(c @ SenderConstraint::Dpop) => {
                    Err(VerifyError::SenderConstraintRequired(c.name()))
                }
                // Certificate binding is checked against the connection by
                // the caller ([`crate::check_binding`]).
                Some(SenderConstraint::Mtls) | None => Ok(id),
            },
            (Scheme::Dpop, None) => Err(VerifyError::UnboundTokenAsDpop),
            (Scheme::Dpop, Some(jkt)) => {
                let proof = proof_header(headers)?.ok_or(DpopRefusal::Missing)?;
                // `ath` is the hash of the token's text: kept with a bound
                // token's identity when it was verified from exactly `raw`
                // (now, or when it was cached, a cache hit matching the
                // whole text); hashed here otherwise.
                let hashed;
                let sha256 = match id.token_sha256() {
                    Some(h) => h,
                    None => {
                        hashed = keyward_jose::crypto::sha256(raw);
                        &hashed
                    }
                };
                let proof_target = ProofTarget {
                    method: target.method,
                    uri: target.uri,
                    token: Some(PresentedToken { sha256, jkt }),
                };
                self.inner
                    .dpop
                    .check(proof, &proof_target, self.inner.clock.now())
                    .await?;
                Ok(id)
            }
        }
    }

    /// The `WWW-Authenticate` challenge for `err` on a request with
    /// `headers` to a resource that requires `require`: a `DPoP` challenge
    /// (with this gate's `algs`) when the request used the `DPoP` scheme, the
    /// resource requires DPoP, or the failure is about DPoP; else `Bearer`.
    pub fn challenge(
        &self,
        err: &VerifyError,
        realm: &str,
        headers: &HeaderMap,
        require: Option<SenderConstraint>,
    ) -> String {
        let dpop = matches!(credential(headers), Ok((Scheme::Dpop, _)))
            || require == Some(SenderConstraint::Dpop)
            || err.is_dpop();
        err.challenge(realm, dpop.then(|| self.inner.dpop.algs()).as_deref())
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
    /// (and counts a cache miss: a header that is not even a b64token
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

    /// The issuer whose key set (in `snaps`, each issuer's current one)
    /// already verified these exact header bytes, when no other issuer may
    /// publish the same kid (an issuer whose keys are not loaded might). A
    /// hint only: the chosen policy still checks `iss` and the signature,
    /// and a refusal is retried by `iss`.
    fn remembered_issuer(
        snaps: &[Option<Arc<Snapshot>>],
        token: &UnverifiedToken<'_>,
    ) -> Option<usize> {
        let kid = token.kid()?;
        let remembers =
            |s: &Option<Arc<Snapshot>>| s.as_ref().is_some_and(|s| s.keys.remembers(token));
        let i = snaps.iter().position(remembers)?;
        let unique = snaps
            .iter()
            .enumerate()
            .all(|(j, other)| j == i || other.as_ref().is_some_and(|s| s.keys.get(kid).is_none()));
        unique.then_some(i)
    }

    /// The issuer the token's `iss` names, read unverified
    /// ([`dangerous::peek_names`]) only to choose whose keys and policy to
    /// verify with (that policy checks it again). The payload is read by
    /// the same strict parser verification uses, so the choice never
    /// refuses what verification would accept.
    fn issuer_by_iss(&self, token: &UnverifiedToken<'_>) -> Result<usize, VerifyError> {
        let names = dangerous::peek_names(token)?;
        let iss = names.iss().ok_or(VerifyError::UntrustedIssuer)?;
        self.inner
            .issuers
            .iter()
            .position(|t| t.policy.issuer == iss)
            .ok_or(VerifyError::UntrustedIssuer)
    }

    /// Reads `token` once (split, header) and verifies it with the issuer
    /// it belongs to: the only one, else the one whose keys verified its
    /// header bytes before, else the one its `iss` names.
    async fn verify_uncached(
        &self,
        token: &str,
    ) -> Result<(Arc<Identity>, usize, u64), VerifyError> {
        let issuers = &self.inner.issuers;
        // Before an issuer is chosen, the largest of their bounds; the
        // chosen policy holds the token to its own.
        let max_len = issuers
            .iter()
            .map(|t| t.validation.max_token_len)
            .max()
            .unwrap_or_default();
        if let [only] = issuers.as_slice() {
            let snap = only.keys.current();
            let keys = snap.as_deref().map(|s| &s.keys);
            let token = UnverifiedToken::parse_known(token, max_len, keys)?;
            return self.verify_with(0, &token, snap).await;
        }
        // Each issuer's current keys, taken once for this token.
        let snaps: Vec<Option<Arc<Snapshot>>> = issuers.iter().map(|t| t.keys.current()).collect();
        let keys = snaps.iter().flatten().map(|s| &s.keys);
        let token = UnverifiedToken::parse_known(token, max_len, keys)?;
        if let Some(i) = Self::remembered_issuer(&snaps, &token) {
            match self.verify_with(i, &token, snaps[i].clone()).await {
                Ok(done) => return Ok(done),
                // Refused under the remembered issuer: perhaps another one
                // has since published the same kid. Decide by `iss`, as if
                // nothing had been remembered (and refuse as that would).
                Err(e) => match self.issuer_by_iss(&token) {
                    Ok(j) if j != i => {}
                    Ok(_) => return Err(e),
                    Err(by_iss) => return Err(by_iss),
                },
            }
        }
        let i = self.issuer_by_iss(&token)?;
        self.verify_with(i, &token, snaps[i].clone()).await
    }

    /// Verifies `token` with trusted issuer `idx`'s keys (`snap` when they
    /// were already taken) and policy. A refusal is counted in
    /// `keyward_gate_verify_failures_total{issuer,kid,reason}`: `kid` is the
    /// token's key id when the issuer publishes it (so the label's values
    /// are bounded by the issuer's keys, never by what callers send), else
    /// `unknown`.
    async fn verify_with(
        &self,
        idx: usize,
        token: &UnverifiedToken<'_>,
        snap: Option<Arc<Snapshot>>,
    ) -> Result<(Arc<Identity>, usize, u64), VerifyError> {
        let result = self.verify_with_keys(idx, token, snap).await;
        if let Err(e) = &result {
            let t = &self.inner.issuers[idx];
            let kid = match (token.kid(), t.keys.current()) {
                (Some(kid), Some(s)) if s.keys.get(kid).is_some() => kid.to_string(),
                _ => "unknown".to_string(),
            };
            counter!("keyward_gate_verify_failures_total", "issuer" => t.policy.issuer.clone(), "kid" => kid, "reason" => e.reason()).increment(1);
        }
        result
    }

    async fn verify_with_keys(
        &self,
        idx: usize,
        token: &UnverifiedToken<'_>,
        snap: Option<Arc<Snapshot>>,
    ) -> Result<(Arc<Identity>, usize, u64), VerifyError> {
        let t = &self.inner.issuers[idx];
        let now = self.inner.clock.now();
        let mut snap = match snap {
            Some(s) => s,
            None => t.keys.keys().await?,
        };
        let verified = match token.verify(&snap.keys, &t.validation, now) {
            Err(JoseError::Token(TokenError::UnknownKid(_))) => {
                let kid = token.kid().unwrap_or_default();
                snap = t.keys.refetch_for_unknown(kid, snap.generation).await?;
                token.verify(&snap.keys, &t.validation, now)?
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
        if identity.cnf_jkt.is_some() {
            // Every proof for a bound token carries its hash (`ath`): kept
            // with the identity, the token is hashed once, not per proof.
            identity.keep_token_sha256(token.text());
        }
        Ok((Arc::new(identity), idx, snap.generation))
    }
}
