//! The running authority: an in-memory snapshot of environments, their keys
//! (signers opened once) and clients, rebuilt whenever the store's generation
//! counter moves. The store stays the source of truth: a change made by the
//! CLI, the admin API or another replica is picked up on the next poll.
//!
//! A root-key rotation (`keyward root-key rotate`) re-wraps every sealed key
//! but changes no key's private material, so signers already open are kept
//! across it (same kid, algorithm and public JWK). The root key itself is
//! swappable: when the store names a root key this server does not hold, it
//! re-reads its source through a [`RootKeyLoader`] and switches. Until it
//! has the store's key it keeps serving with the keys it holds open, and any
//! key it would have to open fails the reload. Every reload failure is
//! recorded ([`ReloadHealth`]): `/readyz` answers 503 and the failure
//! metrics move until a reload succeeds; each distinct error is logged once.
//!
//! Keys held by a device (an HSM, a KMS: [`Settings::key_stores`]) are
//! opened at reload, on a blocking thread. A device that is down does not
//! fail the reload: its environment is served (JWKS, discovery, the other
//! endpoints) but cannot sign, which `/readyz` reports with the store and
//! the reason ([`DeviceFault`]), and every reload (the reloader's tick
//! included) tries the unopened keys again; the store's own backoff keeps
//! that from hammering the device. A device that fails while signing marks
//! its environment the same way until a signature succeeds again (the
//! reloader probes it). Other environments keep issuing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use keyward_jose::crypto::hex;
use keyward_jose::seal::RootKey;
use keyward_jose::{KeySet, PreparedSigner, TokenSigner};
use keyward_signers::KeyStores;
use keyward_store::{Client, Environment, KeyRecord, KeyState, RootKeyRecord, Store, Timestamp};

use crate::clock::SharedClock;
use crate::error::{error_chain, IssuerError, RootKeyLoadError};
use crate::keyring;
use crate::metrics;
use crate::rotation;
use crate::signing::SigningPool;

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The default refresh grace window: long enough for the server to crash,
/// be restarted (or the request to fail over to another replica) and the
/// client to retry with the token it still holds; short enough that a
/// rotated token leaked later is plain reuse. It does not weaken reuse
/// detection: a rotated token is accepted again only while the token it was
/// exchanged for is unused, and that one is then superseded, so of two
/// parties holding one family the second to come back is always caught
/// (RFC 9700 §4.14.2).
pub const DEFAULT_REFRESH_GRACE_SECS: i64 = 60;

/// Settings of the token service.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Lifetime of refresh tokens unless the client overrides it.
    pub refresh_token_ttl_secs: i64,
    /// A rotated refresh token presented again within this many seconds of
    /// its rotation, while the token it was exchanged for is still unused,
    /// gets a fresh one instead of revoking the family: the client lost the
    /// response (a crash, a dropped connection). 0 = off: every replay
    /// revokes. See [`DEFAULT_REFRESH_GRACE_SECS`].
    pub refresh_grace_secs: i64,
    /// Longest accepted lifetime of a private_key_jwt client assertion.
    pub assertion_max_lifetime_secs: u64,
    /// The longest a device (an HSM, a KMS) may take to sign a token: past
    /// it the request answers 503 `temporarily_unavailable` (metric reason
    /// `timeout`). Default [`crate::signing::DEFAULT_SIGNING_TIMEOUT`] (5 s).
    pub signing_timeout: std::time::Duration,
    /// The device key stores this server is configured for: where device
    /// keys are opened, made (rotation) and destroyed. Default: none (local
    /// keys only).
    pub key_stores: KeyStores,
    /// How DPoP proofs (RFC 9449) at the token endpoint are checked: their
    /// algorithms, `iat` window and `jti` replay cache (in memory per
    /// replica by default).
    pub dpop: keyward_verify::DpopPolicy,
    /// A TLS listener asks clients for certificates: the RFC 8705 methods
    /// and `mtls_endpoint_aliases` are advertised in discovery.
    pub mtls: bool,
    /// An issuer whose access tokens the admin API accepts (the company's
    /// SSO), their `permissions` claim read as admin grants; `None`: admin
    /// tokens only. See [`crate::admin::AdminAuth`].
    pub admin_issuer: Option<keyward_verify::Gate>,
    /// Token exchange (RFC 8693): per environment (by name), the other
    /// issuers whose access tokens may be exchanged there, each with its
    /// policy and its JWKS cache (a client must also list the issuer in
    /// its `exchange_issuers`). See [`crate::exchange`].
    pub exchange_issuers: std::collections::HashMap<String, keyward_verify::Gate>,
    /// Reverse proxies (addresses or networks) whose `X-Forwarded-For` is
    /// believed: behind them, a client's address (what the device grant's
    /// limits count by) is the nearest address in that header that is not
    /// one of them ([`keyward_verify::forwarded::client_ip`]). Empty (default): the
    /// connection's own address, and the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_grace_secs: DEFAULT_REFRESH_GRACE_SECS,
            assertion_max_lifetime_secs: 3600,
            signing_timeout: crate::signing::DEFAULT_SIGNING_TIMEOUT,
            key_stores: KeyStores::none(),
            dpop: keyward_verify::DpopPolicy::default(),
            mtls: false,
            admin_issuer: None,
            exchange_issuers: Default::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Why an environment cannot sign with a device key now: what `/readyz`
/// shows. Names the store, the kid and a metric reason; never a detail
/// that could hold a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFault {
    pub kid: String,
    /// `pkcs11`, `aws-kms`.
    pub store: &'static str,
    /// As [`keyward_signers::SignerError::reason`]: `module`, `token`,
    /// `pin`, `session`, `timeout`, `throttled`, `server`,
    /// `bad_signature`, `config`, ...
    pub reason: &'static str,
    /// Since when (the authority's clock).
    pub since: Timestamp,
}

/// A JWK Set document as served: body, entity tag, the verification key set,
/// and until when it stays right.
#[derive(Debug)]
pub struct JwksDoc {
    pub body: Arc<[u8]>,
    pub etag: String,
    pub keys: KeySet,
    pub max_age: i64,
    valid_until: Timestamp,
}

/// One environment as the server sees it.
pub struct EnvState {
    pub env: Environment,
    pub keys: Vec<KeyRecord>,
    /// Opened signers (any [`TokenSigner`]), with the header of the access
    /// tokens they sign.
    signers: HashMap<String, Arc<PreparedSigner>>,
    /// Active or pending device keys that could not be opened at this
    /// snapshot's reload (each reload tries them again).
    pub unopened: Vec<DeviceFault>,
    /// Scheme, host (with port) and path of the issuer URL, for routing.
    pub host: String,
    pub path: String,
    jwks: Mutex<Option<Arc<JwksDoc>>>,
    /// Its DPoP server nonces (RFC 9449 §8), when its token endpoint
    /// requires them.
    pub dpop_nonces: DpopNonces,
}

/// An environment's DPoP nonce key as a snapshot opened it.
#[derive(Clone, Debug)]
pub enum DpopNonces {
    /// Nonces are not required.
    Off,
    /// Required: made and checked with this key (every replica opens the
    /// same sealed secret, so each accepts the others' nonces).
    Required(Arc<keyward_jose::NonceKey>),
    /// Required, but the secret could not be opened (no root key held, or
    /// not the one it is sealed under): DPoP token requests are answered
    /// 503 until a reload opens it; `/readyz` says so.
    Unopened,
}

impl DpopNonces {
    /// The key, when nonces are required and it is open.
    pub fn key(&self) -> Option<&Arc<keyward_jose::NonceKey>> {
        match self {
            DpopNonces::Required(k) => Some(k),
            DpopNonces::Off | DpopNonces::Unopened => None,
        }
    }
}

impl std::fmt::Debug for EnvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvState({}, {} keys)", self.env.name, self.keys.len())
    }
}

impl EnvState {
    /// The key that signs at `now`, opened.
    pub fn signer(&self, now: Timestamp) -> Option<Arc<dyn TokenSigner>> {
        self.access_token_signer(now).map(|s| s.signer().clone())
    }

    /// The key that signs at `now`, with its access-token header.
    pub fn access_token_signer(&self, now: Timestamp) -> Option<&Arc<PreparedSigner>> {
        let rec = rotation::signing_key(&self.keys, now)?;
        self.signers.get(&rec.kid)
    }

    /// The device fault that keeps the key signing at `now` from opening.
    pub fn signing_key_unopened(&self, now: Timestamp) -> Option<&DeviceFault> {
        let rec = rotation::signing_key(&self.keys, now)?;
        self.unopened.iter().find(|f| f.kid == rec.kid)
    }

    /// Whether some key can sign now or will (active or pending).
    pub fn has_usable_key(&self, now: Timestamp) -> bool {
        self.keys
            .iter()
            .any(|k| matches!(k.state(now), KeyState::Active | KeyState::Pending))
    }

    /// The JWKS document valid at `now`, computed once per change of the
    /// published set (a key's creation, revocation or removal).
    pub fn jwks(&self, now: Timestamp) -> Result<Arc<JwksDoc>, IssuerError> {
        let mut slot = self.jwks.lock().expect("jwks lock");
        if let Some(doc) = slot.as_ref() {
            if now < doc.valid_until {
                return Ok(doc.clone());
            }
        }
        let set = keyring::jwks(&self.keys, now)?;
        let body: Arc<[u8]> = set.to_json().into_bytes().into();
        let etag = format!("\"{}\"", hex(&keyward_jose::crypto::sha256(&body)[..12]));
        let keys = KeySet::from_jwks(&set)?;
        // The published set next changes at the earliest future revocation,
        // removal or creation time of any key.
        let valid_until = self
            .keys
            .iter()
            .flat_map(|k| [Some(k.created_at), k.removes_at, k.revoked_at])
            .flatten()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(Timestamp::MAX);
        let doc = Arc::new(JwksDoc {
            body,
            etag,
            keys,
            max_age: rotation::jwks_max_age(&self.env.policy),
            valid_until,
        });
        *slot = Some(doc.clone());
        Ok(doc)
    }
}

/// Everything the server serves from, at one store generation.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: i64,
    pub envs: Vec<Arc<EnvState>>,
    /// By environment, then client id.
    clients: HashMap<String, HashMap<String, Arc<Client>>>,
}

impl Snapshot {
    /// The environment named `name`.
    pub fn env(&self, name: &str) -> Option<&Arc<EnvState>> {
        self.envs.iter().find(|e| e.env.name == name)
    }

    /// The environment serving `path` (and `host`, when several share a
    /// path), with the rest of the path. The longest issuer path wins.
    pub fn route<'p>(
        &self,
        host: Option<&str>,
        path: &'p str,
    ) -> Option<(&Arc<EnvState>, &'p str)> {
        let mut best: Option<(&Arc<EnvState>, &'p str, (bool, usize))> = None;
        for e in &self.envs {
            let Some(rest) = path.strip_prefix(e.path.as_str()) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with('/')) {
                continue;
            }
            // `e.host` is lower case already.
            let same_host = host.is_some_and(|h| h.eq_ignore_ascii_case(&e.host));
            let score = (same_host, e.path.len());
            if best.as_ref().is_none_or(|b| score > b.2) {
                best = Some((e, rest, score));
            }
        }
        best.map(|(e, rest, _)| (e, rest))
    }

    /// Every scope some client of `env` may ask for, sorted.
    pub fn scopes(&self, env: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .clients
            .get(env)
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|c| c.scopes.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Client `client_id` of environment `env`.
    pub fn client(&self, env: &str, client_id: &str) -> Option<&Arc<Client>> {
        self.clients.get(env)?.get(client_id)
    }
}

/// Re-reads the root key from where the server got it, for when the store
/// moved to a new root key while the server runs.
///
/// `expected` is what the store records: the key's id and, for a root key
/// in a device, its reference, which a loader follows (so every replica
/// picks up a rotation to a device key with nothing but the device
/// configured). A loader may block (a device call, a file read): it is
/// called on a blocking thread.
pub trait RootKeyLoader: Send + Sync {
    /// The root key whose id is `expected.id`, read afresh from the
    /// configured source or the device `expected.reference` names, or why
    /// it cannot be had. Never includes key text.
    fn load(&self, expected: &RootKeyRecord) -> Result<RootKey, RootKeyLoadError>;
}

/// What a server holding no root key yet (its device was down at start)
/// reports as the id it holds ([`ReloadHealth::root_key_stale`]).
pub const NO_ROOT_KEY: &str = "none";

/// The root key held, with its id.
struct HeldRoot {
    key: Arc<RootKey>,
    id: String,
}

impl HeldRoot {
    fn new(key: RootKey) -> HeldRoot {
        HeldRoot {
            id: key.key_id(),
            key: Arc::new(key),
        }
    }
}

/// A reload that failed, kept until one succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadFailure {
    /// A metric label: `store`, `root_key`, `key_open` or `other`.
    pub reason: &'static str,
    /// For `/readyz`: what fails, naming kids and root-key ids only.
    pub summary: String,
    /// The whole error, for the log.
    pub detail: String,
}

/// What the reloads found, for readiness and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadHealth {
    /// The last reload's failure, until a reload succeeds.
    pub failure: Option<ReloadFailure>,
    /// Unix time (the authority's clock) of the last successful reload.
    pub last_success: Option<i64>,
    /// While this server does not hold the store's root key: the id it
    /// holds and the id the store's keys are sealed under.
    pub root_key_stale: Option<(String, String)>,
}

/// The authority: store, root key, clock, signing pool and the current snapshot.
pub struct Authority {
    pub store: Store,
    /// `None` until the loader first gives the store's root key (a server
    /// started while its root key's device was down).
    root: RwLock<Option<HeldRoot>>,
    root_loader: Option<Arc<dyn RootKeyLoader>>,
    pub clock: SharedClock,
    pub pool: SigningPool,
    pub settings: Settings,
    snapshot: RwLock<Arc<Snapshot>>,
    reload: tokio::sync::Mutex<()>,
    health: Mutex<ReloadHealth>,
    /// By environment: its device failed the last signature it was asked
    /// for (cleared by the next success).
    sign_faults: Mutex<HashMap<String, DeviceFault>>,
    /// Whether `sign_faults` holds anything: every token's success checks
    /// it without taking the lock.
    any_sign_fault: AtomicBool,
    /// Limits on the device grant's doors (RFC 8628 §5.1).
    pub(crate) device_limits: crate::device::DeviceLimits,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authority(generation {})", self.snapshot().generation)
    }
}

impl Authority {
    /// Checks the root key against the store and loads the first snapshot.
    /// The root key is fixed for the life of this authority (see
    /// [`Authority::load_with_root_loader`]). Device keys that cannot be
    /// opened do not fail it: their environments are reported not ready
    /// and retried at each reload (see the module documentation).
    pub async fn load(
        store: Store,
        root: RootKey,
        clock: SharedClock,
        pool: SigningPool,
        settings: Settings,
    ) -> Result<Arc<Authority>, IssuerError> {
        Self::load_with_root_loader(store, root, None, clock, pool, settings).await
    }

    /// [`Authority::load`], with a loader that re-reads the root key's
    /// source when the store moves to another root key.
    pub async fn load_with_root_loader(
        store: Store,
        root: RootKey,
        root_loader: Option<Box<dyn RootKeyLoader>>,
        clock: SharedClock,
        pool: SigningPool,
        settings: Settings,
    ) -> Result<Arc<Authority>, IssuerError> {
        store.check_root_key(&root).await?;
        let a = Self::new(store, Some(root), root_loader, clock, pool, settings);
        a.reload().await?;
        Ok(a)
    }

    /// An authority that starts without the root key: its loader is asked
    /// for the store's key at the first reload and, until it gives it, at
    /// every reload (the reloader retries after a failure). Meanwhile the
    /// server runs and is not ready: JWKS and discovery are served, keys
    /// sealed under the root key do not sign. For a root key in a device
    /// that is down at start. Fails only when the store cannot be read.
    pub async fn load_waiting_for_root(
        store: Store,
        root_loader: Box<dyn RootKeyLoader>,
        clock: SharedClock,
        pool: SigningPool,
        settings: Settings,
    ) -> Result<Arc<Authority>, IssuerError> {
        let a = Self::new(store, None, Some(root_loader), clock, pool, settings);
        // Keys that cannot be opened yet are recorded (not ready), not fatal.
        match a.reload().await {
            Ok(())
            | Err(IssuerError::KeysUnopened { .. })
            | Err(IssuerError::RootKeyUnavailable { .. }) => Ok(a),
            Err(e) => Err(e),
        }
    }

    fn new(
        store: Store,
        root: Option<RootKey>,
        root_loader: Option<Box<dyn RootKeyLoader>>,
        clock: SharedClock,
        pool: SigningPool,
        settings: Settings,
    ) -> Arc<Authority> {
        let a = Arc::new(Authority {
            store,
            root: RwLock::new(root.map(HeldRoot::new)),
            root_loader: root_loader.map(Arc::from),
            clock,
            pool,
            settings,
            snapshot: RwLock::new(Arc::new(Snapshot {
                generation: -1,
                ..Snapshot::default()
            })),
            reload: tokio::sync::Mutex::new(()),
            health: Mutex::new(ReloadHealth::default()),
            sign_faults: Mutex::new(HashMap::new()),
            any_sign_fault: AtomicBool::new(false),
            device_limits: Default::default(),
        });
        metrics::register_key_stores(&a.settings.key_stores);
        a
    }

    /// The configured device key stores.
    pub fn key_stores(&self) -> &KeyStores {
        &self.settings.key_stores
    }

    /// By environment, the device failures that keep it from signing now:
    /// a signing key that cannot be opened, or a device that failed its
    /// last signature.
    pub fn device_faults(&self) -> Vec<(String, DeviceFault)> {
        let now = self.now();
        let mut out: Vec<(String, DeviceFault)> = self
            .snapshot()
            .envs
            .iter()
            .filter_map(|e| {
                e.signing_key_unopened(now)
                    .map(|f| (e.env.name.clone(), f.clone()))
            })
            .collect();
        let signs = self.sign_faults.lock().expect("sign faults lock");
        for (env, f) in signs.iter() {
            if !out.iter().any(|(e, _)| e == env) {
                out.push((env.clone(), f.clone()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Records that `env`'s device failed to sign with `kid` (`reason`);
    /// logged when the environment goes from signing to failing.
    pub(crate) fn sign_failed(
        &self,
        env: &str,
        kid: &str,
        store: &'static str,
        reason: &'static str,
    ) {
        let mut m = self.sign_faults.lock().expect("sign faults lock");
        if m.get(env).is_none_or(|f| f.reason != reason) {
            tracing::warn!(
                env,
                kid,
                store,
                reason,
                "the environment's signing key failed in its device: the token endpoint answers 503 temporarily_unavailable until it signs again"
            );
        }
        m.entry(env.to_string())
            .and_modify(|f| f.reason = reason)
            .or_insert(DeviceFault {
                kid: kid.to_string(),
                store,
                reason,
                since: self.clock.now(),
            });
        self.any_sign_fault.store(true, Ordering::Release);
    }

    /// Records that `env` signed: its device works again.
    pub(crate) fn sign_succeeded(&self, env: &str) {
        // The hot path: no environment's device is failing.
        if !self.any_sign_fault.load(Ordering::Acquire) {
            return;
        }
        let mut m = self.sign_faults.lock().expect("sign faults lock");
        if let Some(f) = m.remove(env) {
            tracing::info!(env, store = f.store, "the environment's device signs again");
        }
        self.any_sign_fault.store(!m.is_empty(), Ordering::Release);
    }

    /// Whether `env`'s device failed its last signature.
    pub fn sign_fault(&self, env: &str) -> Option<DeviceFault> {
        self.sign_faults
            .lock()
            .expect("sign faults lock")
            .get(env)
            .cloned()
    }

    /// Tries one signature in each environment whose device failed its
    /// last one, so an environment recovers (and `/readyz` says so) even
    /// while no client asks for a token.
    async fn probe_sign_faults(&self) {
        let faulted: Vec<String> = self
            .sign_faults
            .lock()
            .expect("sign faults lock")
            .keys()
            .cloned()
            .collect();
        if faulted.is_empty() {
            return;
        }
        let snapshot = self.snapshot();
        let now = self.now();
        for name in faulted {
            let Some(signer) = snapshot
                .env(&name)
                .and_then(|e| e.access_token_signer(now))
                .cloned()
            else {
                // Its key changed: the next request tells.
                let mut m = self.sign_faults.lock().expect("sign faults lock");
                m.remove(&name);
                self.any_sign_fault.store(!m.is_empty(), Ordering::Release);
                continue;
            };
            let kid = signer.signer().kid().to_string();
            match self
                .pool
                .sign_within(signer, b"{}".to_vec(), self.settings.signing_timeout)
                .await
            {
                Ok(_) => self.sign_succeeded(&name),
                Err(e) => {
                    if let Some((store, reason)) = device_failure(&e) {
                        self.sign_failed(&name, &kid, store, reason);
                    }
                }
            }
        }
    }

    /// The id of the root key this server holds; `None` before its loader
    /// first gave one ([`Authority::load_waiting_for_root`]).
    pub fn root_key_id(&self) -> Option<String> {
        self.root
            .read()
            .expect("root lock")
            .as_ref()
            .map(|h| h.id.clone())
    }

    /// The store's root key, for sealing new keys: the one held, or, after a
    /// root-key rotation, the new one read from the source. Fails with
    /// [`IssuerError::RootKeyStale`] while the source does not give it.
    pub(crate) async fn sealing_root(&self) -> Result<Arc<RootKey>, IssuerError> {
        let expected = self.store.root_key_record().await?;
        self.refresh_root(expected).await
    }

    /// The root key the store records (`None`: whatever is held): the held
    /// one, or a fresh one from the loader (called on a blocking thread: it
    /// may ask a device), which then replaces it.
    async fn refresh_root(
        &self,
        expected: Option<RootKeyRecord>,
    ) -> Result<Arc<RootKey>, IssuerError> {
        let held = self
            .root
            .read()
            .expect("root lock")
            .as_ref()
            .map(|h| (h.key.clone(), h.id.clone()));
        let held_id = held.as_ref().map(|(_, id)| id.clone());
        let expected = match (expected, held) {
            (Some(e), _) if Some(&e.id) != held_id.as_ref() => e,
            (_, Some((key, _))) => {
                self.set_root_stale(None);
                return Ok(key);
            }
            // Nothing held and nothing recorded: an uninitialized store.
            (_, None) => return Err(keyward_store::StoreError::NotInitialized.into()),
        };
        let loaded = match &self.root_loader {
            None => Err(RootKeyLoadError::NotReloadable),
            Some(l) => {
                let (l, e) = (l.clone(), expected.clone());
                tokio::task::spawn_blocking(move || l.load(&e))
                    .await
                    .unwrap_or_else(|j| {
                        Err(RootKeyLoadError::unreadable(format!(
                            "the root key loader did not complete: {j}"
                        )))
                    })
                    .and_then(|k| {
                        let id = k.key_id();
                        if id == expected.id {
                            Ok(k)
                        } else {
                            Err(RootKeyLoadError::OtherKey {
                                origin: "the root key source".into(),
                                held: id,
                            })
                        }
                    })
            }
        };
        // A device key's id names the object (token and label, or ARN),
        // not its contents: one deleted and made again under the same name
        // has the right id and the wrong key. It must open the store's
        // sealed keys before anything is sealed under it.
        let loaded = match loaded {
            Ok(k) if k.is_device() => match self.store.check_root_key_opens(&k).await {
                Ok(()) => Ok(k),
                Err(e) => Err(RootKeyLoadError::unreadable(format!(
                    "the device key {} does not open the store's sealed keys: {e}",
                    k.reference().unwrap_or_default()
                ))),
            },
            other => other,
        };
        let held_text = held_id.clone().unwrap_or_else(|| NO_ROOT_KEY.to_string());
        match loaded {
            Ok(k) => {
                let fresh = HeldRoot::new(k);
                let key = fresh.key.clone();
                *self.root.write().expect("root lock") = Some(fresh);
                tracing::info!(
                    from = %held_text,
                    to = %expected.id,
                    store = key.store(),
                    reference = key.reference().as_deref().unwrap_or("-"),
                    "switched to the store's new root key"
                );
                self.set_root_stale(None);
                Ok(key)
            }
            Err(reason) => {
                self.set_root_stale(Some((held_text.clone(), expected.id.clone())));
                Err(match held_id {
                    Some(held) => IssuerError::RootKeyStale {
                        held,
                        expected: expected.id,
                        reason,
                    },
                    None => IssuerError::RootKeyUnavailable {
                        expected: expected.id,
                        reference: expected.reference,
                        reason,
                    },
                })
            }
        }
    }

    fn set_root_stale(&self, stale: Option<(String, String)>) {
        let mut h = self.health.lock().expect("health lock");
        if h.root_key_stale == stale {
            return;
        }
        match &stale {
            Some((held, expected)) => tracing::warn!(
                held = %held,
                expected = %expected,
                "this server does not hold the store's root key: it keeps signing with the keys it has open, but cannot open or seal new ones until its root key source gives root key {expected}"
            ),
            None => {
                if let Some((held, _)) = &h.root_key_stale {
                    tracing::info!(was = %held, "this server holds the store's root key again");
                }
            }
        }
        h.root_key_stale = stale;
    }

    /// The state-derived gauges as of now, for a `/metrics` scrape.
    pub async fn gauges(&self) -> metrics::Gauges {
        let now = self.now();
        let health = self.reload_health();
        let envs =
            self.snapshot()
                .envs
                .iter()
                .map(|e| {
                    let signing = rotation::signing_key(&e.keys, now);
                    let policy = &e.env.policy;
                    metrics::EnvGauges {
                        env: e.env.name.clone(),
                        without_key: e.keys.is_empty(),
                        can_sign: e.access_token_signer(now).is_some()
                            && self.sign_fault(&e.env.name).is_none(),
                        signing_key_age_secs: signing.map(|k| now - k.activates_at),
                        secs_to_next_rotation: signing.map(|k| {
                            k.activates_at + policy.rotate_every_secs - policy.lead_secs - now
                        }),
                        published_keys: rotation::published(&e.keys, now).count(),
                        keys_by_state: [KeyState::Pending, KeyState::Active, KeyState::Retired]
                            .map(|st| {
                                (
                                    st.name(),
                                    e.keys.iter().filter(|k| k.state(now) == st).count(),
                                )
                            }),
                        rotation_overdue_secs: signing.map(|_| {
                            rotation::rotation_overdue_secs(policy, &e.keys, now).unwrap_or(0)
                        }),
                        rotation_in_progress: rotation::rotation_in_progress(policy, &e.keys, now),
                    }
                })
                .collect();
        metrics::Gauges {
            reload_ok: health.failure.is_none(),
            reload_last_success: health.last_success,
            root_key_stale: health.root_key_stale.is_some(),
            envs,
            audit_chain_length: self.store.audit_len().await.ok(),
        }
    }

    /// What the reloads found so far.
    pub fn reload_health(&self) -> ReloadHealth {
        self.health.lock().expect("health lock").clone()
    }

    fn record_success(&self) {
        let mut h = self.health.lock().expect("health lock");
        if let Some(f) = h.failure.take() {
            tracing::info!(previous = %f.detail, "reload succeeded again");
        }
        h.last_success = Some(self.clock.now());
    }

    fn record_failure(&self, e: &IssuerError) {
        let f = ReloadFailure {
            reason: e.reason(),
            summary: failure_summary(e),
            detail: error_chain(e),
        };
        metrics::reload_failed(f.reason);
        let mut h = self.health.lock().expect("health lock");
        if h.failure.as_ref().map(|x| &x.detail) != Some(&f.detail) {
            tracing::error!(
                reason = f.reason,
                error = %f.detail,
                "reload failed; /readyz answers 503 until a reload succeeds"
            );
        }
        h.failure = Some(f);
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Rebuilds the snapshot if the store's generation moved or the last
    /// reload failed; returns whether it did. While the held root key is
    /// stale, looks for the store's key in the source each time.
    pub async fn reload_if_changed(&self) -> Result<bool, IssuerError> {
        let g = match self.store.generation().await {
            Ok(g) => g,
            Err(e) => {
                let e = IssuerError::from(e);
                self.record_failure(&e);
                return Err(e);
            }
        };
        let health = self.reload_health();
        self.probe_sign_faults().await;
        let unopened = self.snapshot().envs.iter().any(|e| !e.unopened.is_empty());
        if g == self.snapshot().generation && health.failure.is_none() && !unopened {
            if health.root_key_stale.is_some() {
                // Nothing to reopen: only try to pick the new key up.
                let _ = self.sealing_root().await;
            }
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Rebuilds the snapshot from the store. Signers already open are kept,
    /// also when their sealed blob was re-wrapped under a new root key.
    ///
    /// When the store cannot be read the snapshot stays as it was. When it
    /// can, the new snapshot is installed even if some active or pending
    /// keys cannot be opened (they are published but do not sign here), so
    /// revocations, client changes and new environments always take effect;
    /// the reload then fails with [`IssuerError::KeysUnopened`]. Either
    /// failure is recorded in [`Authority::reload_health`].
    pub async fn reload(&self) -> Result<(), IssuerError> {
        let _one = self.reload.lock().await;
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let r = self.reload_once().await;
            if attempts < 3 && matches!(r, Err(IssuerError::KeysUnopened { .. })) {
                // A root-key rotation may have committed between reading the
                // root key's id and the keys: read again if the store moved.
                if let Ok(g) = self.store.generation().await {
                    if g != self.snapshot().generation {
                        continue;
                    }
                }
            }
            break r;
        };
        match &result {
            Ok(()) => self.record_success(),
            Err(e) => self.record_failure(e),
        }
        result
    }

    async fn reload_once(&self) -> Result<(), IssuerError> {
        let old = self.snapshot();
        let generation = self.store.generation().await?;
        let expected_root = self.store.root_key_record().await?;
        let root = self.refresh_root(expected_root).await;
        let envs = self.store.environments().await?;
        let all_keys = self.store.keys_all().await?;
        let clients = self.store.all_clients().await?;
        let now = self.now();
        let mut states = Vec::with_capacity(envs.len());
        let mut unopened = Vec::new();
        let mut open_error = None;
        for env in envs {
            let keys: Vec<KeyRecord> = all_keys
                .iter()
                .filter(|k| k.env == env.name)
                .cloned()
                .collect();
            let previous = old.env(&env.name);
            let mut signers = HashMap::new();
            let mut faults = Vec::new();
            for k in &keys {
                if !matches!(k.state(now), KeyState::Active | KeyState::Pending) {
                    continue;
                }
                // A kid's private key never changes; its sealed blob does
                // when the root key is rotated. Same kid, algorithm and
                // public key: the open signer is still right.
                let reused = previous.and_then(|p| p.signers.get(&k.kid)).filter(|_| {
                    previous.is_some_and(|p| {
                        p.keys.iter().any(|o| {
                            o.kid == k.kid && o.alg == k.alg && o.public_jwk == k.public_jwk
                        })
                    })
                });
                if reused.is_none() && k.key_store().is_device() {
                    // A device that is down leaves this key unopened, not
                    // the reload failed: retried at the next reload.
                    match self.open_device_key(k).await {
                        Ok(s) => {
                            signers.insert(
                                k.kid.clone(),
                                Arc::new(PreparedSigner::new(s, Some(ACCESS_TOKEN_TYP))),
                            );
                        }
                        Err(f) => faults.push(f),
                    }
                    continue;
                }
                let opened = match (reused, &root) {
                    (Some(s), _) => Ok(s.clone()),
                    // A root key in a device unwraps through the device:
                    // on a thread that may block, not a runtime worker.
                    (None, Ok(root)) if root.is_device() => {
                        let (root, stores, rec) =
                            (root.clone(), self.settings.key_stores.clone(), k.clone());
                        tokio::task::spawn_blocking(move || {
                            keyring::load_signer(&root, &stores, &rec)
                        })
                        .await
                        .unwrap_or_else(|e| {
                            Err(IssuerError::Unavailable(format!(
                                "the key-opening task failed: {e}"
                            )))
                        })
                        .map(|s| Arc::new(PreparedSigner::new(s, Some(ACCESS_TOKEN_TYP))))
                    }
                    (None, Ok(root)) => keyring::load_signer(root, &self.settings.key_stores, k)
                        .map(|s| Arc::new(PreparedSigner::new(s, Some(ACCESS_TOKEN_TYP)))),
                    (None, Err(_)) => {
                        unopened.push(k.kid.clone());
                        continue;
                    }
                };
                match opened {
                    Ok(signer) => {
                        signers.insert(k.kid.clone(), signer);
                    }
                    Err(e) => {
                        unopened.push(k.kid.clone());
                        open_error.get_or_insert(e);
                    }
                }
            }
            let dpop_nonces = self.open_dpop_nonces(&env, previous, &root).await;
            // Where it is served; unique across environments (the store's issuer_key).
            let (host, path) = keyward_store::issuer_route(&env.issuer);
            states.push(Arc::new(EnvState {
                env,
                keys,
                signers,
                unopened: faults,
                host,
                path,
                jwks: Mutex::new(None),
                dpop_nonces,
            }));
        }
        for e in states.iter().filter(|e| e.keys.is_empty()) {
            if old.env(&e.env.name).is_none_or(|o| !o.keys.is_empty()) {
                tracing::warn!(
                    env = %e.env.name,
                    "environment {} has no key yet: it is served, but cannot sign until one is made (`keyward keys generate --env {}`)",
                    e.env.name,
                    e.env.name
                );
            }
        }
        let mut by_env: HashMap<String, HashMap<String, Arc<Client>>> = HashMap::new();
        for c in clients {
            by_env
                .entry(c.env.clone())
                .or_default()
                .insert(c.client_id.clone(), Arc::new(c));
        }
        *self.snapshot.write().expect("snapshot lock") = Arc::new(Snapshot {
            generation,
            envs: states,
            clients: by_env,
        });
        if unopened.is_empty() {
            return Ok(());
        }
        // A key is left unopened only for a stale root key or an open error.
        let Some(source) = root.err().or(open_error) else {
            return Ok(());
        };
        Err(IssuerError::KeysUnopened {
            kids: unopened,
            source: Box::new(source),
        })
    }

    /// `env`'s DPoP nonce key: the previous snapshot's while its sealed
    /// secret is unchanged, else opened with `root` (on a blocking thread
    /// for a device root). A secret that does not open is logged and left
    /// [`DpopNonces::Unopened`]; the reload goes on.
    async fn open_dpop_nonces(
        &self,
        env: &Environment,
        previous: Option<&Arc<EnvState>>,
        root: &Result<Arc<RootKey>, IssuerError>,
    ) -> DpopNonces {
        let Some(sealed) = &env.dpop_nonce_secret else {
            return DpopNonces::Off;
        };
        if let Some(k) = previous
            .filter(|p| p.env.dpop_nonce_secret.as_ref() == Some(sealed))
            .and_then(|p| p.dpop_nonces.key())
        {
            return DpopNonces::Required(k.clone());
        }
        let Ok(root) = root else {
            return DpopNonces::Unopened;
        };
        let (root, e) = (root.clone(), env.clone());
        let opened = match root.is_device() {
            true => tokio::task::spawn_blocking(move || keyring::dpop_nonce_key(&root, &e))
                .await
                .unwrap_or_else(|j| {
                    Err(IssuerError::Unavailable(format!(
                        "the secret-opening task failed: {j}"
                    )))
                }),
            false => keyring::dpop_nonce_key(&root, &e),
        };
        match opened {
            Ok(Some(k)) => DpopNonces::Required(Arc::new(k)),
            Ok(None) => DpopNonces::Off,
            Err(e) => {
                tracing::warn!(env = %env.name, error = %e, "the DPoP nonce secret cannot be opened: DPoP token requests are refused (503) until it can");
                DpopNonces::Unopened
            }
        }
    }

    /// Opens device key `k` on a blocking thread; a failure is logged when
    /// it is new (another reason than at the last reload) and returned as
    /// a [`DeviceFault`].
    async fn open_device_key(&self, k: &KeyRecord) -> Result<Arc<dyn TokenSigner>, DeviceFault> {
        let stores = self.settings.key_stores.clone();
        let rec = k.clone();
        let opened =
            tokio::task::spawn_blocking(move || keyring::open_device_signer(&stores, &rec))
                .await
                .unwrap_or_else(|e| {
                    Err(IssuerError::Unavailable(format!(
                        "the key-opening task failed: {e}"
                    )))
                });
        opened.map_err(|e| {
            let store = k.key_store().as_str();
            let reason = match &e {
                IssuerError::KeyStore(s) => s.reason(),
                _ => "device",
            };
            let fault = DeviceFault {
                kid: k.kid.clone(),
                store,
                reason,
                since: self.now(),
            };
            let known = self.snapshot().envs.iter().any(|env| {
                env.unopened
                    .iter()
                    .any(|f| f.kid == fault.kid && f.reason == fault.reason)
            });
            if !known {
                tracing::error!(
                    env = %k.env,
                    kid = %k.kid,
                    store,
                    reason,
                    error = %error_chain(&e),
                    "a device key cannot be opened: its environment cannot sign with it until the device answers (retried at each reload)"
                );
            }
            fault
        })
    }

    /// Polls the store every `interval` and reloads on change (and after a
    /// failed reload), until the returned task is aborted. Failures are
    /// recorded in [`Authority::reload_health`] and logged once per distinct
    /// error.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let a = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = a.reload_if_changed().await;
            }
        })
    }
}

/// The store and reason of a device's failure to sign (a
/// [`keyward_jose::KeyError::Unavailable`]), if `e` is one.
pub(crate) fn device_failure(e: &IssuerError) -> Option<(&'static str, &'static str)> {
    match e {
        IssuerError::Jose(keyward_jose::Error::Key(keyward_jose::KeyError::Unavailable {
            store,
            reason,
            ..
        })) => Some((store, reason)),
        IssuerError::KeyStore(s) if s.is_transient() => {
            Some((s.store().unwrap_or("device"), s.reason()))
        }
        _ => None,
    }
}

/// What `/readyz` says about a failed reload: kids and root-key ids, never
/// file paths or database messages.
fn failure_summary(e: &IssuerError) -> String {
    let stale = |held: &str, expected: &str| {
        format!("this server holds root key {held}, the store's keys are sealed under root key {expected}")
    };
    let unavailable = |expected: &str, reference: &Option<String>| match reference {
        Some(r) => format!("this server cannot reach the store's root key {expected} ({r})"),
        None => format!("this server cannot load the store's root key {expected}"),
    };
    match e {
        IssuerError::Store(_) => "the store cannot be read".into(),
        IssuerError::RootKeyStale { held, expected, .. } => stale(held, expected),
        IssuerError::RootKeyUnavailable {
            expected,
            reference,
            ..
        } => unavailable(expected, reference),
        IssuerError::KeysUnopened { kids, source } => {
            let why = match &**source {
                IssuerError::RootKeyStale { held, expected, .. } => stale(held, expected),
                IssuerError::RootKeyUnavailable {
                    expected,
                    reference,
                    ..
                } => unavailable(expected, reference),
                _ => "their sealed keys do not open".into(),
            };
            format!("cannot open key(s) {}: {why}", kids.join(", "))
        }
        _ => "the server's view could not be rebuilt".into(),
    }
}
