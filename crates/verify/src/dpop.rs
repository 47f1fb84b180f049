//! DPoP proof checks against a request (RFC 9449 §4.3, §7.1), shared by the
//! gate (resource server) and the issuer's token endpoint.
//!
//! keyward-jose reads and verifies the proof itself ([`keyward_jose::dpop`]);
//! [`DpopPolicy::check`] then holds it to the request, in this order:
//!
//! 1. exactly one `DPoP` header ([`proof_header`]);
//! 2. the proof: `typ`, `alg` in [`DpopPolicy::algorithms`], a public `jwk`
//!    that verifies the signature, typed claims (a header text seen before
//!    with a good signature is not read again: [`ProofHeaders`]);
//! 3. `htm` equals the request method (byte for byte);
//! 4. `htu` equals the request URI without query and fragment, both
//!    normalised ([`normalize_htu`]: scheme and host lower-cased, default
//!    port dropped, dot segments resolved, percent-encoding normalised);
//! 5. `iat` no older than [`DpopPolicy::max_age_secs`] and no more than
//!    [`DpopPolicy::leeway_secs`] ahead of `now`;
//! 6. with a nonce key: a `nonce` it issued, not yet expired, else
//!    `use_dpop_nonce` with a fresh one;
//! 7. at a resource (an access token presented): `ath` equal to the token's
//!    hash and the proof's key thumbprint equal to the token's `cnf.jkt`;
//!    at the token endpoint, an `ath` is refused;
//! 8. `jti` seen for the first time ([`ReplayCache`]), remembered until the
//!    proof's `iat` window has passed. Last, so a proof refused for any other
//!    reason takes no room.

use std::sync::{Arc, Mutex};

use http::HeaderMap;
use keyward_jose::dpop::{ProofHeader, UnverifiedProof};
use keyward_jose::dpop::{DEFAULT_DPOP_ALGORITHMS, DEFAULT_MAX_PROOF_LEN};
use keyward_jose::{ath_matches, crypto, Algorithm, DpopProof, NonceKey};

use crate::error::DpopRefusal;
use crate::replay::{LocalReplayCache, ReplayCache};

/// The `DPoP` request header.
pub const DPOP_HEADER: &str = "dpop";
/// The `DPoP-Nonce` response header.
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";

/// How a request proves it holds the key its token is bound to. A route or
/// an issuer may require one; tokens bound to a key always need their proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SenderConstraint {
    /// DPoP (RFC 9449): `Authorization: DPoP` and a `DPoP` proof.
    Dpop,
    /// Certificate-bound (RFC 8705 §3): `cnf.x5t#S256` and the same client
    /// certificate on the connection (checked by [`crate::check_binding`]).
    Mtls,
}

impl SenderConstraint {
    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            SenderConstraint::Dpop => "dpop",
            SenderConstraint::Mtls => "mtls",
        }
    }

    /// Parses a configuration name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "dpop" => Some(SenderConstraint::Dpop),
            "mtls" => Some(SenderConstraint::Mtls),
            _ => None,
        }
    }
}

/// What a DPoP proof is held to.
#[derive(Clone)]
pub struct DpopPolicy {
    /// Accepted proof algorithms (default: ES256, EdDSA, RS256, PS256,
    /// ML-DSA-44/65/87).
    pub algorithms: Vec<Algorithm>,
    /// Oldest accepted `iat`, in seconds before now (default 60).
    pub max_age_secs: i64,
    /// Furthest accepted `iat` ahead of now, in seconds (default 5).
    pub leeway_secs: i64,
    /// Longest accepted proof, in bytes.
    pub max_proof_len: usize,
    /// Where `jti`s are remembered.
    pub replay: Arc<dyn ReplayCache>,
    /// Server nonces, when required.
    pub nonces: Option<Arc<NonceKey>>,
    /// Proof headers already read ([`ProofHeaders`]).
    pub headers: Arc<ProofHeaders>,
}

/// The proof headers a policy has read, by their exact base64url text: a
/// client signs every proof with the same key, so its proofs share one
/// header, and reading it (three JSON passes, the JWK, the key parsed for
/// verification, the key's thumbprint) costs about a third of an ES256
/// verification. What is kept is a function of the text alone
/// ([`ProofHeader`]), and only for a header whose proof verified; every
/// proof's signature and claims are still checked. Bounded: when full it
/// is emptied and refilled by the clients that come next.
pub struct ProofHeaders {
    capacity: usize,
    map: Mutex<foldhash::HashMap<Box<str>, Arc<ProofHeader>>>,
}

/// Headers a [`ProofHeaders`] holds by default: one per active client key.
pub const DEFAULT_PROOF_HEADERS: usize = 4096;

impl std::fmt::Debug for ProofHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofHeaders")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for ProofHeaders {
    fn default() -> Self {
        ProofHeaders::new(DEFAULT_PROOF_HEADERS)
    }
}

impl ProofHeaders {
    /// Keeps at most `capacity` headers (0: none).
    pub fn new(capacity: usize) -> Self {
        ProofHeaders {
            capacity,
            map: Mutex::default(),
        }
    }

    /// Headers held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<Box<str>, Arc<ProofHeader>>> {
        // Each operation's write is one insert or a clear: consistent after a panic.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, header_b64: &str) -> Option<Arc<ProofHeader>> {
        self.lock().get(header_b64).cloned()
    }

    fn remember(&self, header_b64: &str, header: &Arc<ProofHeader>) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(header_b64.into(), header.clone());
    }
}

impl std::fmt::Debug for DpopPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopPolicy")
            .field("algorithms", &self.algorithms)
            .field("max_age_secs", &self.max_age_secs)
            .field("leeway_secs", &self.leeway_secs)
            .field("nonces", &self.nonces.is_some())
            .finish_non_exhaustive()
    }
}

/// The default capacity of a [`LocalReplayCache`] made for a policy:
/// 1,000 proofs a second over a 65-second window, with room to spare.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

impl Default for DpopPolicy {
    fn default() -> Self {
        DpopPolicy {
            algorithms: DEFAULT_DPOP_ALGORITHMS.to_vec(),
            max_age_secs: 60,
            leeway_secs: 5,
            max_proof_len: DEFAULT_MAX_PROOF_LEN,
            replay: Arc::new(LocalReplayCache::new(DEFAULT_REPLAY_CAPACITY)),
            nonces: None,
            headers: Arc::default(),
        }
    }
}

/// The request a proof must match.
#[derive(Clone, Copy, Debug)]
pub struct ProofTarget<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request's absolute URI (query and fragment are ignored).
    pub uri: &'a str,
    /// At a resource: the access token presented with the proof. `None` at
    /// the token endpoint.
    pub token: Option<PresentedToken<'a>>,
}

/// An access token presented with a proof at a resource (RFC 9449 §7.1).
#[derive(Clone, Copy, Debug)]
pub struct PresentedToken<'a> {
    /// The SHA-256 of the token's text: the proof's `ath` must be its
    /// base64url ([`keyward_jose::crypto::sha256`], or kept with a cached
    /// token).
    pub sha256: &'a [u8; 32],
    /// The thumbprint of the key the token is bound to (`cnf.jkt`).
    pub jkt: &'a str,
}

/// The one `DPoP` header's value: `Ok(None)` when absent; several headers or
/// one that is not text are refused.
pub fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, DpopRefusal> {
    let mut all = headers.get_all(DPOP_HEADER).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(DpopRefusal::Repeated);
    }
    first.to_str().map(Some).map_err(|_| {
        DpopRefusal::Malformed(keyward_jose::DpopError::Token(
            keyward_jose::TokenError::Segments,
        ))
    })
}

/// `uri` as RFC 9449 §4.3 compares it: an absolute `http` or `https` URI
/// without query, fragment or user info, normalised by RFC 3986 §6.2.2-6.2.3
/// (scheme and host lower case, default port dropped, dot segments removed,
/// percent-encoding of unreserved characters decoded, an empty path `/`).
/// `None` for anything else.
pub fn normalize_htu(uri: &str) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    // The url crate lower-cases scheme and host, drops default ports and
    // resolves dot segments; it leaves percent-encoding as written, so
    // unreserved characters encoded are decoded here, and hex digits of the
    // rest upper-cased (RFC 3986 §6.2.2.1-2).
    let path = normalize_percent(url.path())?;
    url.set_path(&path);
    Some(url.into())
}

/// Whether [`normalize_htu`] leaves `uri` as it is, judged without parsing
/// it: a lower-case `http` or `https` scheme; a host that is a lower-case
/// DNS name (no punycode) or a dotted-quad IPv4 address written the usual
/// way; a port only when it is not the scheme's default, without leading
/// zeros; a non-empty path of unreserved and sub-delimiter characters, `:`,
/// `@` and `/`, with no dot segment, no percent-encoding, no query and no
/// fragment. `false` only means "not known": the caller then normalises.
/// A client library sends the URI it was given, and the gate's own target
/// is its configured origin and the request's path, so the two are mostly
/// the same text, already normal, and a proof need not be parsed as a URL.
fn is_normal_htu(uri: &str) -> bool {
    let (rest, default_port) = if let Some(r) = uri.strip_prefix("https://") {
        (r, "443")
    } else if let Some(r) = uri.strip_prefix("http://") {
        (r, "80")
    } else {
        return false;
    };
    let Some(slash) = rest.find('/') else {
        return false;
    };
    let (authority, path) = rest.split_at(slash);
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if let Some(p) = port {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits || p.starts_with('0') || p == default_port || p.parse::<u16>().is_err() {
            return false;
        }
    }
    normal_host(host) && normal_path(path)
}

fn normal_host(host: &str) -> bool {
    // A host whose last label starts with a digit may be an IPv4 address
    // to a URL parser, which rewrites `127.1` or `0x7f.0.0.1`: only a
    // canonical dotted quad is taken as it is.
    let last = host.rsplit('.').next().unwrap_or_default();
    if last.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let canonical_octet = |l: &str| {
            !l.is_empty()
                && l.len() <= 3
                && l.bytes().all(|b| b.is_ascii_digit())
                && (l.len() == 1 || !l.starts_with('0'))
                && l.parse::<u8>().is_ok()
        };
        return host.split('.').count() == 4 && host.split('.').all(canonical_octet);
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with("xn--")
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn normal_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b))
        && path.split('/').all(|seg| seg != "." && seg != "..")
}

fn normalize_percent(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(v as char);
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    Some(out)
}

impl DpopPolicy {
    /// Checks `proof` against `target` at `now` (unix seconds), in the order
    /// of the module's list; the verified proof on success.
    pub async fn check(
        &self,
        proof: &str,
        target: &ProofTarget<'_>,
        now: i64,
    ) -> Result<DpopProof, DpopRefusal> {
        self.check_with_nonces(proof, target, now, self.nonces.as_deref())
            .await
    }

    /// [`DpopPolicy::check`] with `nonces` in place of
    /// [`DpopPolicy::nonces`]: for a server whose nonce requirement differs
    /// by tenant (the issuer's environments), sharing one policy and one
    /// replay cache.
    pub async fn check_with_nonces(
        &self,
        proof: &str,
        target: &ProofTarget<'_>,
        now: i64,
        nonces: Option<&NonceKey>,
    ) -> Result<DpopProof, DpopRefusal> {
        let mut known = false;
        let unverified = UnverifiedProof::parse_with(proof, self.max_proof_len, |h| {
            let found = self.headers.get(h);
            known = found.is_some();
            found
        })
        .map_err(DpopRefusal::Malformed)?;
        let p = unverified
            .verify(&self.algorithms)
            .map_err(DpopRefusal::Malformed)?;
        if !known {
            let (text, header) = unverified.header();
            self.headers.remember(text, header);
        }
        if p.htm != target.method {
            return Err(DpopRefusal::Method);
        }
        // The same text normalises the same way: one pass is enough then,
        // and none when the text is already normal.
        let same_uri = if p.htu == target.uri {
            is_normal_htu(target.uri) || normalize_htu(target.uri).is_some()
        } else {
            matches!((normalize_htu(&p.htu), normalize_htu(target.uri)), (Some(a), Some(b)) if a == b)
        };
        if !same_uri {
            return Err(DpopRefusal::Uri);
        }
        if p.iat < now.saturating_sub(self.max_age_secs) {
            return Err(DpopRefusal::TooOld);
        }
        if p.iat > now.saturating_add(self.leeway_secs) {
            return Err(DpopRefusal::IssuedInFuture);
        }
        if let Some(nonces) = nonces {
            if !p.nonce.as_deref().is_some_and(|n| nonces.check(n, now)) {
                return Err(DpopRefusal::UseNonce(nonces.issue(now)));
            }
        }
        match (target.token, p.ath.as_deref()) {
            (Some(token), Some(ath)) => {
                if !ath_matches(ath, token.sha256) {
                    return Err(DpopRefusal::AthMismatch);
                }
                if p.jkt != token.jkt {
                    return Err(DpopRefusal::KeyMismatch);
                }
            }
            (Some(_), None) => return Err(DpopRefusal::AthMissing),
            (None, Some(_)) => return Err(DpopRefusal::AthUnexpected),
            (None, None) => {}
        }
        // Scoped to the key: two clients cannot collide, and the entry's
        // size is fixed whatever the jti's length.
        let key = format!(
            "dpop:{}",
            crypto::hex(&crypto::sha256_parts(&[
                p.jkt.as_bytes(),
                b"\0",
                p.jti.as_bytes()
            ]))
        );
        let expires_at = p.iat.saturating_add(self.max_age_secs).saturating_add(1);
        match self.replay.first_use(&key, expires_at, now).await {
            Ok(true) => Ok(p),
            Ok(false) => Err(DpopRefusal::Replayed),
            Err(e) => {
                tracing::warn!(error = %e, "DPoP replay cache could not answer; proof refused");
                Err(DpopRefusal::ReplayCacheUnavailable)
            }
        }
    }

    /// The `algs` of a `WWW-Authenticate: DPoP` challenge: the accepted
    /// algorithms, space-separated.
    pub fn algs(&self) -> String {
        self.algorithms
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The `algs` of a challenge when no policy is at hand: the default ones.
pub(crate) fn default_algs() -> String {
    DEFAULT_DPOP_ALGORITHMS
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Test helpers shared by this crate's tests: a client key and its proofs.
#[cfg(test)]
pub(crate) mod testing {
    use base64::Engine as _;
    use keyward_jose::{Algorithm, PrivateKey};
    use serde_json::{json, Value};

    pub(crate) const NOW: i64 = 1_700_000_000;

    pub(crate) fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A client's DPoP key.
    pub(crate) struct Client(pub PrivateKey);

    impl Client {
        pub(crate) fn new() -> Self {
            Client(PrivateKey::generate(Algorithm::ES256, None).unwrap())
        }

        pub(crate) fn jkt(&self) -> String {
            self.0.public_key().thumbprint()
        }

        pub(crate) fn header(&self) -> Value {
            json!({
                "typ": "dpop+jwt",
                "alg": "ES256",
                "jwk": self.0.public_key().to_jwk(None).to_value(),
            })
        }

        /// A proof of `claims` under `header`.
        pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = self.0.sign(input.as_bytes()).unwrap();
            format!("{input}.{}", b64(&sig))
        }

        /// A proof for `method` `uri` at `iat`, with `ath` of `token`.
        pub(crate) fn proof(
            &self,
            method: &str,
            uri: &str,
            iat: i64,
            token: Option<&str>,
        ) -> String {
            let mut c = json!({
                "jti": keyward_jose::crypto::random_text::<12>(),
                "htm": method, "htu": uri, "iat": iat,
            });
            if let Some(t) = token {
                c["ath"] = keyward_jose::access_token_hash(t).into();
            }
            self.sign(&self.header(), &c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use serde_json::json;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    const URI: &str = "https://api.example/orders";

    fn at_token_endpoint(
        policy: &DpopPolicy,
        proof: &str,
        now: i64,
    ) -> Result<DpopProof, DpopRefusal> {
        let t = ProofTarget {
            method: "POST",
            uri: URI,
            token: None,
        };
        block(policy.check(proof, &t, now))
    }

    #[test]
    fn htu_normalisation() {
        let n = |s| normalize_htu(s);
        let want = n("https://api.example/orders").unwrap();
        for same in [
            "HTTPS://API.Example/orders",
            "https://api.example:443/orders",
            "https://api.example/orders?x=1",
            "https://api.example/orders#frag",
            "https://api.example/a/../orders",
            "https://api.example/./orders",
            "https://api.example/%6Frders",
        ] {
            assert_eq!(n(same).as_deref(), Some(want.as_str()), "{same}");
        }
        assert_eq!(n("http://h:80").unwrap(), "http://h/");
        assert_eq!(n("http://h/a%2fb").unwrap(), "http://h/a%2Fb");
        for other in [
            "https://api.example:8443/orders",
            "http://api.example/orders",
            "https://api.example/Orders",
            "https://api.example/orders/",
            "https://evil.example/orders",
        ] {
            assert_ne!(n(other).as_deref(), Some(want.as_str()), "{other}");
        }
        for refused in [
            "/orders",
            "ftp://api.example/orders",
            "https://user:pw@api.example/orders",
            "https://api.example/%zz",
            "not a uri",
        ] {
            assert_eq!(n(refused), None, "{refused}");
        }
    }

    #[test]
    fn normal_htu_is_known_without_parsing_only_when_it_is() {
        for normal in [
            "https://api.example/orders",
            "http://api.example:8080/",
            "https://127.0.0.1:8443/dpop/42",
            "http://10.0.0.255/a//b/c.d/..e/~x/a:b@c/!$&'()*+,;=",
            "https://a-b.c9.example/x",
        ] {
            assert!(is_normal_htu(normal), "{normal}");
            assert_eq!(normalize_htu(normal).as_deref(), Some(normal), "{normal}");
        }
        for unknown in [
            "HTTPS://api.example/orders",
            "https://API.example/orders",
            "https://api.example:443/orders",
            "http://api.example:80/orders",
            "https://api.example:08443/orders",
            "https://api.example:99999/orders",
            "https://api.example:/orders",
            "https://api.example",
            "https://api.example/orders?x=1",
            "https://api.example/orders#f",
            "https://api.example/a/../orders",
            "https://api.example/./orders",
            "https://api.example/a/..",
            "https://api.example/%6Frders",
            "https://api.example/a b",
            "https://api.example/a\\b",
            "https://user@api.example/orders",
            "https://[::1]/orders",
            "https://127.1/orders",
            "https://0x7f.0.0.1/orders",
            "https://127.000.0.1/orders",
            "https://256.0.0.1/orders",
            "https://1.2.3.4.5/orders",
            "https://xn--nxasmq6b.example/orders",
            "https://api.example./orders",
            "https://api..example/orders",
            "ftp://api.example/orders",
            "https:/api.example/orders",
        ] {
            assert!(!is_normal_htu(unknown), "{unknown}");
        }
    }

    proptest::proptest! {
        /// Whatever the fast check calls normal, the URL parser agrees is.
        #[test]
        fn what_is_called_normal_is_normal(
            uri in proptest::prop_oneof![
                // Anything near a URI.
                "(https?|HTTP)://([a-zA-Z0-9.\\-]{0,12}|[0-9x.]{0,12})(:[0-9]{0,6})?(/[a-zA-Z0-9.%~:@!$&'()*+,;=?#\\-]{0,10}){0,3}",
                // Mostly normal ones, dot segments and odd addresses included.
                "https?://([a-z0-9\\-]{1,6}\\.){0,2}[a-z0-9\\-]{1,6}(:[0-9]{1,5})?(/[a-z0-9.~:@!$&'()*+,;=\\-]{0,4}){1,3}",
                "https?://[0-9]{1,4}(\\.[0-9]{1,4}){0,4}(:[0-9]{1,5})?/[a-z.]{0,3}",
            ]
        ) {
            if is_normal_htu(&uri) {
                let normalized = normalize_htu(&uri);
                proptest::prop_assert_eq!(normalized.as_deref(), Some(uri.as_str()));
            }
        }
    }

    #[test]
    fn a_good_proof_passes_once() {
        let policy = DpopPolicy::default();
        let c = Client::new();
        let p = c.proof("POST", "https://API.example:443/orders?q=1", NOW, None);
        assert_eq!(at_token_endpoint(&policy, &p, NOW).unwrap().jkt, c.jkt());
        // The same proof again is a replay, even seconds later.
        assert_eq!(
            at_token_endpoint(&policy, &p, NOW + 1).unwrap_err(),
            DpopRefusal::Replayed
        );
    }

    #[test]
    fn a_known_header_is_reused_but_every_signature_is_checked() {
        let policy = DpopPolicy::default();
        let c = Client::new();
        // A refused proof leaves nothing behind.
        let mut bad = c.proof("POST", URI, NOW, None);
        bad.replace_range(bad.len() - 4.., "AAAA");
        assert!(matches!(
            at_token_endpoint(&policy, &bad, NOW),
            Err(DpopRefusal::Malformed(_))
        ));
        assert!(policy.headers.is_empty());
        // A good one's header is kept, by its text.
        let p1 = c.proof("POST", URI, NOW, None);
        assert_eq!(at_token_endpoint(&policy, &p1, NOW).unwrap().jkt, c.jkt());
        assert_eq!(policy.headers.len(), 1);
        // The next proof with that header still needs its own good signature
        // and claims; the thumbprint is the header's.
        let mut forged = c.proof("POST", URI, NOW, None);
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(matches!(
            at_token_endpoint(&policy, &forged, NOW),
            Err(DpopRefusal::Malformed(_))
        ));
        let other = Client::new();
        let mixed = {
            // Another key's signature under the known header.
            let p = other.proof("POST", URI, NOW, None);
            let (h, rest) = (p1.split('.').next().unwrap(), p.split_once('.').unwrap().1);
            format!("{h}.{rest}")
        };
        assert!(matches!(
            at_token_endpoint(&policy, &mixed, NOW),
            Err(DpopRefusal::Malformed(_))
        ));
        let p2 = c.proof("POST", URI, NOW, None);
        assert_eq!(at_token_endpoint(&policy, &p2, NOW).unwrap().jkt, c.jkt());
        assert_eq!(policy.headers.len(), 1);
        assert_eq!(
            at_token_endpoint(&policy, &p2, NOW).unwrap_err(),
            DpopRefusal::Replayed
        );
        // Bounded: a full set is emptied before the next header goes in.
        let small = DpopPolicy {
            headers: Arc::new(ProofHeaders::new(2)),
            ..DpopPolicy::default()
        };
        for _ in 0..5 {
            let k = Client::new();
            let p = k.proof("POST", URI, NOW, None);
            assert_eq!(at_token_endpoint(&small, &p, NOW).unwrap().jkt, k.jkt());
            assert!(small.headers.len() <= 2);
        }
        let none = DpopPolicy {
            headers: Arc::new(ProofHeaders::new(0)),
            ..DpopPolicy::default()
        };
        at_token_endpoint(&none, &c.proof("POST", URI, NOW, None), NOW).unwrap();
        assert!(none.headers.is_empty());
    }

    #[test]
    fn method_uri_and_iat_window() {
        let policy = DpopPolicy::default();
        let c = Client::new();
        for (proof, want) in [
            (c.proof("GET", URI, NOW, None), DpopRefusal::Method),
            (c.proof("post", URI, NOW, None), DpopRefusal::Method),
            (
                c.proof("POST", "https://api.example/other", NOW, None),
                DpopRefusal::Uri,
            ),
            (
                c.proof("POST", "https://api.example:8443/orders", NOW, None),
                DpopRefusal::Uri,
            ),
            (c.proof("POST", "/orders", NOW, None), DpopRefusal::Uri),
            (c.proof("POST", URI, NOW - 61, None), DpopRefusal::TooOld),
            (
                c.proof("POST", URI, NOW + 6, None),
                DpopRefusal::IssuedInFuture,
            ),
        ] {
            assert_eq!(at_token_endpoint(&policy, &proof, NOW).unwrap_err(), want);
        }
        // The edges of the window pass.
        at_token_endpoint(&policy, &c.proof("POST", URI, NOW - 60, None), NOW).unwrap();
        at_token_endpoint(&policy, &c.proof("POST", URI, NOW + 5, None), NOW).unwrap();
    }

    #[test]
    fn a_refused_proof_is_not_remembered() {
        let cache = Arc::new(LocalReplayCache::new(10));
        let policy = DpopPolicy {
            replay: cache.clone(),
            ..DpopPolicy::default()
        };
        let c = Client::new();
        let p = c.proof("GET", URI, NOW, None);
        at_token_endpoint(&policy, &p, NOW).unwrap_err();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_replay_cache_refuses() {
        let policy = DpopPolicy {
            replay: Arc::new(LocalReplayCache::new(1)),
            ..DpopPolicy::default()
        };
        let c = Client::new();
        at_token_endpoint(&policy, &c.proof("POST", URI, NOW, None), NOW).unwrap();
        assert_eq!(
            at_token_endpoint(&policy, &c.proof("POST", URI, NOW, None), NOW).unwrap_err(),
            DpopRefusal::ReplayCacheUnavailable
        );
    }

    #[test]
    fn ath_and_key_binding_at_a_resource() {
        let policy = DpopPolicy::default();
        let c = Client::new();
        let other = Client::new();
        let jkt = c.jkt();
        let check = |proof: &str, token: &str| {
            let t = ProofTarget {
                method: "GET",
                uri: URI,
                token: Some(PresentedToken {
                    sha256: &crypto::sha256(token.as_bytes()),
                    jkt: &jkt,
                }),
            };
            block(policy.check(proof, &t, NOW))
        };
        check(&c.proof("GET", URI, NOW, Some("tok")), "tok").unwrap();
        assert_eq!(
            check(&c.proof("GET", URI, NOW, Some("other")), "tok").unwrap_err(),
            DpopRefusal::AthMismatch
        );
        assert_eq!(
            check(&c.proof("GET", URI, NOW, None), "tok").unwrap_err(),
            DpopRefusal::AthMissing
        );
        assert_eq!(
            check(&other.proof("GET", URI, NOW, Some("tok")), "tok").unwrap_err(),
            DpopRefusal::KeyMismatch
        );
        // At the token endpoint, an ath is out of place.
        assert_eq!(
            at_token_endpoint(&policy, &c.proof("POST", URI, NOW, Some("tok")), NOW).unwrap_err(),
            DpopRefusal::AthUnexpected
        );
    }

    #[test]
    fn nonces_when_required() {
        let key = Arc::new(NonceKey::derive(b"s", "prod", 300));
        let policy = DpopPolicy {
            nonces: Some(key.clone()),
            ..DpopPolicy::default()
        };
        let c = Client::new();
        let with_nonce = |nonce: &str, iat: i64| {
            let mut claims =
                json!({"jti": crypto::random_text::<8>(), "htm": "POST", "htu": URI, "iat": iat});
            if !nonce.is_empty() {
                claims["nonce"] = nonce.into();
            }
            c.sign(&c.header(), &claims)
        };
        // Missing: use_dpop_nonce with a nonce that then works.
        let Err(DpopRefusal::UseNonce(fresh)) =
            at_token_endpoint(&policy, &with_nonce("", NOW), NOW)
        else {
            panic!("a nonce is required");
        };
        assert!(key.check(&fresh, NOW));
        at_token_endpoint(&policy, &with_nonce(&fresh, NOW), NOW).unwrap();
        // Wrong, or expired (two windows later).
        assert!(matches!(
            at_token_endpoint(&policy, &with_nonce("bm9wZQ", NOW), NOW),
            Err(DpopRefusal::UseNonce(_))
        ));
        let later = NOW + 600;
        assert!(matches!(
            at_token_endpoint(&policy, &with_nonce(&fresh, later), later),
            Err(DpopRefusal::UseNonce(_))
        ));
        // Another key's nonce.
        let other = NonceKey::derive(b"s", "dev", 300).issue(NOW);
        assert!(matches!(
            at_token_endpoint(&policy, &with_nonce(&other, NOW), NOW),
            Err(DpopRefusal::UseNonce(_))
        ));
    }

    #[test]
    fn the_dpop_header_is_one_text_value() {
        let mut h = HeaderMap::new();
        assert_eq!(proof_header(&h).unwrap(), None);
        h.append(DPOP_HEADER, "a.b.c".parse().unwrap());
        assert_eq!(proof_header(&h).unwrap(), Some("a.b.c"));
        h.append(DPOP_HEADER, "d.e.f".parse().unwrap());
        assert_eq!(proof_header(&h).unwrap_err(), DpopRefusal::Repeated);
    }
}
