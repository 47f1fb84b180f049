//! The running authority: an in-memory snapshot of environments, their keys
//! (signers opened once) and clients, rebuilt whenever the store's generation
//! counter moves. The store stays the source of truth: a change made by the
//! CLI, the admin API or another replica is picked up on the next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use keyward_jose::crypto::hex;
use keyward_jose::seal::RootKey;
use keyward_jose::{KeySet, LocalSigner};
use keyward_store::{Client, Environment, KeyRecord, KeyState, Store, Timestamp};

use crate::clock::SharedClock;
use crate::error::IssuerError;
use crate::keyring;
use crate::rotation;
use crate::signing::{PreparedSigner, SigningPool};

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_grace_secs: DEFAULT_REFRESH_GRACE_SECS,
            assertion_max_lifetime_secs: 3600,
        }
    }
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
    /// Opened signers, with the header of the access tokens they sign.
    signers: HashMap<String, Arc<PreparedSigner>>,
    /// Scheme, host (with port) and path of the issuer URL, for routing.
    pub host: String,
    pub path: String,
    jwks: Mutex<Option<Arc<JwksDoc>>>,
}

impl std::fmt::Debug for EnvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvState({}, {} keys)", self.env.name, self.keys.len())
    }
}

/// Splits an issuer URL into host (with port) and path (no trailing slash).
pub fn split_issuer(issuer: &str) -> (String, String) {
    let rest = issuer.split_once("://").map(|x| x.1).unwrap_or(issuer);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    (
        host.to_ascii_lowercase(),
        path.trim_end_matches('/').to_string(),
    )
}

impl EnvState {
    /// The key that signs at `now`, opened.
    pub fn signer(&self, now: Timestamp) -> Option<Arc<LocalSigner>> {
        self.access_token_signer(now).map(|s| s.signer.clone())
    }

    /// The key that signs at `now`, with its access-token header.
    pub fn access_token_signer(&self, now: Timestamp) -> Option<&Arc<PreparedSigner>> {
        let rec = rotation::signing_key(&self.keys, now)?;
        self.signers.get(&rec.kid)
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

/// The authority: store, root key, clock, signing pool and the current snapshot.
pub struct Authority {
    pub store: Store,
    root: RootKey,
    pub clock: SharedClock,
    pub pool: SigningPool,
    pub settings: Settings,
    snapshot: RwLock<Arc<Snapshot>>,
    reload: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authority(generation {})", self.snapshot().generation)
    }
}

impl Authority {
    /// Checks the root key against the store and loads the first snapshot.
    pub async fn load(
        store: Store,
        root: RootKey,
        clock: SharedClock,
        pool: SigningPool,
        settings: Settings,
    ) -> Result<Arc<Authority>, IssuerError> {
        store.check_root_key(&root).await?;
        let a = Arc::new(Authority {
            store,
            root,
            clock,
            pool,
            settings,
            snapshot: RwLock::new(Arc::new(Snapshot {
                generation: -1,
                ..Snapshot::default()
            })),
            reload: tokio::sync::Mutex::new(()),
        });
        a.reload().await?;
        Ok(a)
    }

    /// The root key (for sealing new keys).
    pub(crate) fn root(&self) -> &RootKey {
        &self.root
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Rebuilds the snapshot if the store's generation moved; returns whether it did.
    pub async fn reload_if_changed(&self) -> Result<bool, IssuerError> {
        let g = self.store.generation().await?;
        if g == self.snapshot().generation {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Rebuilds the snapshot from the store. Signers already open are kept.
    pub async fn reload(&self) -> Result<(), IssuerError> {
        let _one = self.reload.lock().await;
        let old = self.snapshot();
        let generation = self.store.generation().await?;
        let envs = self.store.environments().await?;
        let all_keys = self.store.keys_all().await?;
        let clients = self.store.all_clients().await?;
        let now = self.now();
        let mut states = Vec::with_capacity(envs.len());
        for env in envs {
            let keys: Vec<KeyRecord> = all_keys
                .iter()
                .filter(|k| k.env == env.name)
                .cloned()
                .collect();
            let previous = old.env(&env.name);
            let mut signers = HashMap::new();
            for k in &keys {
                if !matches!(k.state(now), KeyState::Active | KeyState::Pending) {
                    continue;
                }
                let reused = previous.and_then(|p| p.signers.get(&k.kid)).filter(|_| {
                    previous.is_some_and(|p| {
                        p.keys
                            .iter()
                            .any(|o| o.kid == k.kid && o.sealed == k.sealed)
                    })
                });
                let signer = match reused {
                    Some(s) => s.clone(),
                    None => Arc::new(PreparedSigner::new(
                        Arc::new(keyring::load_signer(&self.root, k)?),
                        ACCESS_TOKEN_TYP,
                    )),
                };
                signers.insert(k.kid.clone(), signer);
            }
            let (host, path) = split_issuer(&env.issuer);
            states.push(Arc::new(EnvState {
                env,
                keys,
                signers,
                host,
                path,
                jwks: Mutex::new(None),
            }));
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
        Ok(())
    }

    /// Polls the store every `interval` and reloads on change, until the
    /// returned task is aborted. Errors are reported through `on_error`.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: std::time::Duration,
        on_error: impl Fn(&IssuerError) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let a = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = a.reload_if_changed().await {
                    on_error(&e);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_urls_split_for_routing() {
        assert_eq!(
            split_issuer("http://127.0.0.1:8080"),
            ("127.0.0.1:8080".into(), "".into())
        );
        assert_eq!(
            split_issuer("https://Auth.Example.com/prod/"),
            ("auth.example.com".into(), "/prod".into())
        );
    }
}
