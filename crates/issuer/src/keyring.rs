//! An environment's keys: bringing a new key in (generated or imported),
//! retiring, revoking, opening a signer, and the published JWK Set.
//!
//! Every change is one store transaction that also appends its audit record,
//! so a failed operation leaves nothing behind (DESIGN.md rule 5). Key
//! generation happens before the transaction (RSA-4096 takes seconds), on a
//! blocking thread, after the checks that can refuse the change: one path,
//! [`generate_key`] (and [`create_environment`] for an environment's first
//! key), serves the CLI, the admin API and the scheduler alike.
//!
//! An environment's new keys are made in its key store
//! ([`Environment::key_store`]): `local` keys are generated here and sealed
//! under the root key; in a device store (`pkcs11`, `aws-kms`) the key is
//! generated inside the device ([`keyward_signers::KeyStore::generate`], on
//! a blocking thread, after [`keyward_signers::KeyStore::check_algorithm`])
//! and the store records only its reference and public key. If the
//! transaction that records a device key fails, the device key is
//! destroyed again: nothing is left behind.
//!
//! A device key's `kid` is random (128 bits, base64url), not the RFC 7638
//! thumbprint local keys get: the device names the key (PKCS#11
//! `CKA_ID`/`CKA_LABEL`, a KMS tag) when it makes it, before its public key
//! and so its thumbprint exist; renaming it afterwards would be a second
//! device write that can fail and leave the device's name and the record's
//! kid apart. A kid given by the caller is used as given.
//!
//! Keys are never imported into a device store ([`add_key`] refuses): a
//! key whose private half existed outside the device is not a device key,
//! whatever attributes it gets once inside.
//!
//! When a device key leaves the JWKS (removed by time, or revoked), its
//! device object is destroyed ([`destroy_unpublished`], run by the
//! scheduler; [`revoke_key`] tries at once) and the record marked, with a
//! `key.destroy` audit record naming the store and the reference.

use std::sync::Arc;

use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, Jwk, JwkSet, KeyFamily, LocalSigner, PrivateKey, TokenSigner};
pub use keyward_signers::KeyStores;
use keyward_signers::{HardwareKey, KeyStore, SignerError};
use keyward_store::{
    open_private_key, seal_private_key, AuditEntry, Environment, KeyMaterial, KeyRecord, KeyState,
    KeyStoreName, RotationPolicy, Store, StoreError, Timestamp, Tx,
};
use serde_json::json;

use crate::error::IssuerError;
use crate::rotation::{self, RotationPlan, Schedule};

/// How a key came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Generated,
    Imported,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::Imported => "imported",
        }
    }
}

/// Descriptive fields of a new key.
#[derive(Clone, Debug)]
pub struct KeyOptions {
    /// Default: the RFC 7638 thumbprint.
    pub kid: Option<String>,
    pub owner: Option<String>,
    pub description: Option<String>,
    pub origin: Origin,
}

/// Who makes a change, and when: every operation records both in the audit chain.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    pub now: Timestamp,
    pub actor: &'a str,
}

/// A key that was added, and what its arrival changed.
#[derive(Clone, Debug)]
pub struct AddedKey {
    pub key: KeyRecord,
    pub plan: RotationPlan,
    /// The environment's policy algorithm was set from this key (its first
    /// key, or [`KeyChoice::Adopt`]).
    pub policy_updated: bool,
}

/// A `kid` keyward accepts: 1 to 128 of `A-Z a-z 0-9 . _ -`.
pub fn check_kid(kid: &str) -> Result<(), IssuerError> {
    let ok = !kid.is_empty()
        && kid.len() <= 128
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IssuerError::invalid(
            "a kid is 1 to 128 characters of A-Z a-z 0-9 . _ -",
        ))
    }
}

/// An environment name keyward accepts: the same characters as a kid.
pub fn check_env_name(name: &str) -> Result<(), IssuerError> {
    check_kid(name).map_err(|_| {
        IssuerError::invalid("an environment name is 1 to 128 characters of A-Z a-z 0-9 . _ -")
    })
}

/// An issuer URL keyward accepts: absolute http(s), no query or fragment.
pub fn check_issuer(issuer: &str) -> Result<(), IssuerError> {
    let ok_scheme = issuer.starts_with("https://") || issuer.starts_with("http://");
    let rest = issuer.split_once("://").map(|x| x.1).unwrap_or("");
    if !ok_scheme
        || rest.is_empty()
        || rest.starts_with('/')
        || issuer.contains(['?', '#', ' '])
        || keyward_jose::claim_text::check_value(issuer).is_err()
    {
        return Err(IssuerError::invalid(format!(
            "invalid issuer URL {issuer:?}: use an absolute http(s) URL without query or fragment, e.g. https://auth.example.com"
        )));
    }
    Ok(())
}

/// The longest duration a rotation policy may name (100 years), so that
/// computed times stay far from overflowing.
pub const MAX_POLICY_SECS: i64 = 100 * 365 * 24 * 3600;

/// A rotation policy keyward can follow: a key size it can generate, a
/// positive lead shorter than the rotation period, a positive token TTL.
pub fn check_policy(p: &RotationPolicy) -> Result<(), IssuerError> {
    let refuse = |m: String| Err(IssuerError::invalid(m));
    check_key_size(p.alg, p.rsa_bits)?;
    if [p.lead_secs, p.rotate_every_secs, p.token_ttl_secs]
        .iter()
        .any(|v| *v > MAX_POLICY_SECS)
    {
        return refuse(format!(
            "policy durations are at most {MAX_POLICY_SECS} s (100 years)"
        ));
    }
    if p.lead_secs <= 0 || p.rotate_every_secs <= p.lead_secs {
        return refuse(
            "the rotation period must be longer than the lead time, and the lead positive".into(),
        );
    }
    if p.token_ttl_secs <= 0 {
        return refuse("the token TTL must be positive".into());
    }
    Ok(())
}

/// A key size keyward generates for `alg`: for RSA none (the default) or
/// one of [`keyward_jose::RSA_SIZES`]; for other families none.
fn check_key_size(alg: Algorithm, rsa_bits: Option<u32>) -> Result<(), IssuerError> {
    match (alg.family(), rsa_bits) {
        (KeyFamily::Rsa, Some(b)) if !keyward_jose::RSA_SIZES.contains(&b) => {
            Err(IssuerError::invalid(format!(
                "RSA key size {b} is not offered (choose 2048, 3072 or 4096)"
            )))
        }
        (KeyFamily::Rsa, _) | (_, None) => Ok(()),
        (_, Some(_)) => Err(IssuerError::invalid(format!(
            "rsa_bits applies only to RSA algorithms, not {alg}"
        ))),
    }
}

/// The paths every environment serves under its issuer path (see
/// [`crate::http`]): an environment whose issuer path lies under another's
/// endpoints on the same host would hide them.
pub const ENDPOINT_PREFIXES: [&str; 3] = ["/.well-known", "/oauth2", "/revocations"];

/// Whether `inner`'s issuer URL lies under one of `outer`'s endpoint paths
/// on the same host (`https://a/oauth2` under `https://a`).
fn hides_endpoints_of(inner: &str, outer: &str) -> bool {
    let (inner_host, inner_path) = keyward_store::issuer_route(inner);
    let (outer_host, outer_path) = keyward_store::issuer_route(outer);
    if inner_host != outer_host {
        return false;
    }
    let Some(rest) = inner_path.strip_prefix(outer_path.as_str()) else {
        return false;
    };
    ENDPOINT_PREFIXES.iter().any(|p| {
        rest.strip_prefix(p)
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    })
}

/// Refuses `env` when another of `others` has its name or issuer URL, or
/// when its issuer URL and another's would hide one another's endpoints:
/// the longest issuer path wins a request, so an environment at
/// `https://a/oauth2` would take `https://a`'s token endpoint.
fn check_free_among(env: &Environment, others: &[Environment]) -> Result<(), IssuerError> {
    let key = keyward_store::issuer_key(&env.issuer);
    for other in others.iter().filter(|o| o.name != env.name) {
        if keyward_store::issuer_key(&other.issuer) == key {
            return Err(StoreError::IssuerTaken {
                issuer: env.issuer.clone(),
                env: other.name.clone(),
            }
            .into());
        }
        let (inner, outer) = if hides_endpoints_of(&env.issuer, &other.issuer) {
            (env, other)
        } else if hides_endpoints_of(&other.issuer, &env.issuer) {
            (other, env)
        } else {
            continue;
        };
        return Err(IssuerError::Conflict(format!(
            "issuer URL {} of environment {} lies under the endpoints of {} ({}): it would take requests meant for {}; choose another path",
            inner.issuer, inner.name, outer.name, outer.issuer, outer.name
        )));
    }
    Ok(())
}

/// Checks, before a slow key generation, that [`create_environment`] will
/// accept `env`: valid, and its name, issuer URL and endpoints free. (The
/// transaction checks again.)
async fn check_new_environment(store: &Store, env: &Environment) -> Result<(), IssuerError> {
    check_environment(env)?;
    let others = store.environments().await?;
    if others.iter().any(|o| o.name == env.name) {
        return Err(StoreError::Conflict {
            what: "environment",
            name: env.name.clone(),
        }
        .into());
    }
    check_free_among(env, &others)
}

/// An environment keyward accepts: name, issuer URL and policy.
pub fn check_environment(env: &Environment) -> Result<(), IssuerError> {
    check_env_name(&env.name)?;
    check_issuer(&env.issuer)?;
    check_policy(&env.policy)
}

/// Which key to generate: an algorithm and, for RSA, a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub alg: Algorithm,
    /// RSA modulus bits; `None` for other families, or for RSA's default
    /// ([`keyward_jose::DEFAULT_RSA_BITS`]).
    pub rsa_bits: Option<u32>,
}

impl KeySpec {
    /// The key an environment's policy makes (what rotation uses).
    pub fn for_policy(policy: &RotationPolicy) -> KeySpec {
        KeySpec {
            alg: policy.alg,
            rsa_bits: matches!(policy.alg.family(), KeyFamily::Rsa)
                .then_some(policy.rsa_bits.unwrap_or(keyward_jose::DEFAULT_RSA_BITS)),
        }
    }
}

/// Generates a key of `spec` on a blocking thread: RSA-4096 generation
/// takes seconds.
pub async fn generate(spec: KeySpec) -> Result<PrivateKey, IssuerError> {
    tokio::task::spawn_blocking(move || PrivateKey::generate(spec.alg, spec.rsa_bits))
        .await
        .map_err(IssuerError::KeyGeneration)?
        .map_err(IssuerError::from)
}

/// What [`generate_key`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyChoice {
    /// The key the environment's rotation policy makes.
    Policy,
    /// This algorithm and size; the policy stays (`keys generate --alg`).
    Given(KeySpec),
    /// This algorithm and size, and the environment's rotation policy
    /// adopts them in the same transaction, so that automatic rotation goes
    /// on making keys like it (`keys rotate --alg`: a move to another
    /// algorithm, say from RS256 to ML-DSA-65; see [`KeyChoice::for_rotation`]).
    Adopt(KeySpec),
}

impl KeyChoice {
    /// What a rotation of an environment with `policy` makes when it names
    /// an algorithm or an RSA size (`keys rotate --alg ML-DSA-65`): the
    /// policy with them, checked, adopted ([`KeyChoice::Adopt`]). An RSA
    /// size is kept from `policy` when both algorithms are RSA; a size given
    /// for another family is refused. [`KeyChoice::Policy`] when neither is
    /// named.
    pub fn for_rotation(
        policy: &RotationPolicy,
        alg: Option<Algorithm>,
        rsa_bits: Option<u32>,
    ) -> Result<KeyChoice, IssuerError> {
        if alg.is_none() && rsa_bits.is_none() {
            return Ok(KeyChoice::Policy);
        }
        let mut next = policy.clone();
        if let Some(alg) = alg {
            let both_rsa = alg.family() == KeyFamily::Rsa && policy.alg.family() == KeyFamily::Rsa;
            next.alg = alg;
            next.rsa_bits = rsa_bits.or(policy.rsa_bits.filter(|_| both_rsa));
        } else {
            next.rsa_bits = rsa_bits;
        }
        check_policy(&next)?;
        Ok(KeyChoice::Adopt(KeySpec::for_policy(&next)))
    }
}

/// Generates a key and brings it into environment `env` on `schedule`: the
/// one path by which the CLI (`keys generate`, `keys rotate`), the admin
/// API (`keys/rotate`) and the scheduler make a key.
///
/// `choice` says which key: the environment's policy's, a given algorithm
/// and size, or one the policy adopts in the same transaction
/// ([`KeyChoice::Adopt`]). Before the slow generation it checks what can
/// refuse the change (the key size and a given kid are valid, the
/// environment exists, `root` is the store's root key, a lead rotation is
/// not already in progress, the environment's key store is configured in
/// `stores` and can make the algorithm); then it makes the key in the
/// environment's key store and inserts it in one transaction with its
/// audit record (`key.rotate` when it replaces a key, else
/// `key.generate`), as [`add_key`] does, checking again. A device key whose
/// transaction fails is destroyed again. `at` is asked for the time of
/// each check, so the key's times are taken once it is made.
#[allow(clippy::too_many_arguments)]
pub async fn generate_key<'a>(
    store: &Store,
    root: &RootKey,
    stores: &KeyStores,
    env: &str,
    choice: KeyChoice,
    opts: &KeyOptions,
    schedule: Schedule,
    at: impl Fn() -> Change<'a>,
) -> Result<AddedKey, IssuerError> {
    let (spec, adopt) = match choice {
        KeyChoice::Policy => (None, false),
        KeyChoice::Given(s) => (Some(s), false),
        KeyChoice::Adopt(s) => (Some(s), true),
    };
    if let Some(s) = spec {
        check_key_size(s.alg, s.rsa_bits)?;
    }
    if let Some(kid) = &opts.kid {
        check_kid(kid)?;
    }
    let environment = store.environment(env).await?;
    store.check_root_key(root).await?;
    rotation::plan(
        &environment.policy,
        &store.keys(env).await?,
        at().now,
        schedule,
    )?;
    let spec = spec.unwrap_or_else(|| KeySpec::for_policy(&environment.policy));
    let made = make_key(stores, environment.key_store, spec, opts).await?;
    let result = add(store, root, env, &made, opts, schedule, at(), adopt).await;
    discard_on_failure(&made, &result).await;
    result
}

/// A key just made, not recorded yet.
pub(crate) enum Made<'k> {
    /// Generated here, to be sealed.
    Local(PrivateKey),
    /// Given by the caller (an import), to be sealed.
    Given(&'k PrivateKey),
    /// Made inside `device`, named `kid` there.
    Device {
        device: Arc<dyn KeyStore>,
        store: KeyStoreName,
        kid: String,
        key: HardwareKey,
    },
}

impl Made<'_> {
    fn algorithm(&self) -> Algorithm {
        match self {
            Made::Local(k) => k.algorithm(),
            Made::Given(k) => k.algorithm(),
            Made::Device { key, .. } => key.public.algorithm(),
        }
    }

    /// The private key of a key made here.
    fn local(&self) -> Option<&PrivateKey> {
        match self {
            Made::Local(k) => Some(k),
            Made::Given(k) => Some(k),
            Made::Device { .. } => None,
        }
    }
}

/// The device store named `name` among `stores`: `None` for `local`, a
/// [`SignerError::Config`] saying how to configure it when it is not.
pub fn device_store(
    stores: &KeyStores,
    name: KeyStoreName,
) -> Result<Option<Arc<dyn KeyStore>>, IssuerError> {
    if !name.is_device() {
        return Ok(None);
    }
    Ok(Some(stores.get(name.as_str())?.clone()))
}

/// Whether key store `name` can make the keys of `policy`: configured here
/// and able to do its algorithm (asked of the device where abilities vary,
/// a PKCS#11 token's mechanisms). What a change of an environment's key
/// store checks first, so that its next rotation does not fail.
pub async fn check_store_for(
    stores: &KeyStores,
    name: KeyStoreName,
    policy: &RotationPolicy,
) -> Result<(), IssuerError> {
    let Some(device) = device_store(stores, name)? else {
        return Ok(());
    };
    let spec = KeySpec::for_policy(policy);
    on_device(&device, move |d| d.check_algorithm(spec.alg, spec.rsa_bits)).await
}

/// Runs `f` on `device` on a thread that may block (every device call
/// waits on the device for a bounded time), counting a failure in
/// `keyward_signer_errors_total{store,reason}`.
pub(crate) async fn on_device<T: Send + 'static>(
    device: &Arc<dyn KeyStore>,
    f: impl FnOnce(&dyn KeyStore) -> Result<T, SignerError> + Send + 'static,
) -> Result<T, IssuerError> {
    let d = device.clone();
    let name = device.name();
    let r = tokio::task::spawn_blocking(move || f(d.as_ref()))
        .await
        .map_err(|e| IssuerError::Unavailable(format!("the {name} key store call failed: {e}")))?;
    r.map_err(|e| {
        crate::metrics::signer_error(e.store().unwrap_or(name), e.reason());
        IssuerError::KeyStore(e)
    })
}

/// A random kid for a device key (see the module documentation).
fn device_kid() -> String {
    keyward_jose::crypto::random_text::<16>()
}

/// Makes a key of `spec` in the key store `store_name`: here (local), or
/// inside the device after checking that it can make the algorithm.
pub(crate) async fn make_key(
    stores: &KeyStores,
    store_name: KeyStoreName,
    spec: KeySpec,
    opts: &KeyOptions,
) -> Result<Made<'static>, IssuerError> {
    let Some(device) = device_store(stores, store_name)? else {
        return Ok(Made::Local(generate(spec).await?));
    };
    let kid = match &opts.kid {
        Some(k) => {
            check_kid(k)?;
            k.clone()
        }
        None => device_kid(),
    };
    let (alg, bits) = (spec.alg, spec.rsa_bits);
    // Nothing is made in a device that cannot do the algorithm.
    on_device(&device, move |d| d.check_algorithm(alg, bits)).await?;
    let name = kid.clone();
    let key = on_device(&device, move |d| d.generate(&name, alg, bits)).await?;
    let made = Made::Device {
        device,
        store: store_name,
        kid,
        key,
    };
    // The device made what was asked, or the key goes again.
    if made.algorithm() != alg {
        let got = made.algorithm();
        discard(&made).await;
        return Err(IssuerError::KeyStore(SignerError::Mismatch {
            store: store_name.as_str(),
            reference: "(new key)".into(),
            why: format!("asked for a {alg} key, the device made a {got} key"),
        }));
    }
    Ok(made)
}

/// Destroys a device key that was made but not recorded. A failure is
/// logged with the reference, so an operator can remove it by hand.
async fn discard(made: &Made<'_>) {
    let Made::Device {
        device, key, kid, ..
    } = made
    else {
        return;
    };
    let reference = key.reference.clone();
    let r = reference.clone();
    match on_device(device, move |d| d.destroy(&r)).await {
        Ok(()) => tracing::info!(
            store = device.name(),
            %reference,
            %kid,
            "a device key made for a change that failed was destroyed again"
        ),
        Err(e) => tracing::error!(
            store = device.name(),
            %reference,
            %kid,
            error = %crate::error::error_chain(&e),
            "a device key made for a change that failed could not be destroyed: remove it from the device by hand"
        ),
    }
}

async fn discard_on_failure<T>(made: &Made<'_>, result: &Result<T, IssuerError>) {
    if result.is_err() {
        discard(made).await;
    }
}

fn record(
    root: &RootKey,
    env: &str,
    made: &Made<'_>,
    opts: &KeyOptions,
    now: Timestamp,
) -> Result<KeyRecord, IssuerError> {
    let (kid, public, material) = match (made.local(), made) {
        (Some(key), _) => {
            let kid = match &opts.kid {
                Some(k) => {
                    check_kid(k)?;
                    k.clone()
                }
                None => key.public_key().thumbprint(),
            };
            let sealed = seal_private_key(root, env, &kid, &key.to_pkcs8_der())?;
            (kid, key.public_key(), KeyMaterial::Sealed(sealed))
        }
        (
            None,
            Made::Device {
                store, kid, key, ..
            },
        ) => (
            kid.clone(),
            &key.public,
            KeyMaterial::Device {
                store: *store,
                reference: key.reference.clone(),
            },
        ),
        (None, _) => return Err(IssuerError::invalid("no key was made")),
    };
    let public_jwk = public.to_jwk(Some(kid.clone())).to_json();
    Ok(KeyRecord {
        env: env.to_string(),
        kid,
        alg: public.algorithm(),
        size_bits: public.bits(),
        public_jwk,
        material,
        origin: opts.origin.as_str().to_string(),
        owner: opts.owner.clone(),
        description: opts.description.clone(),
        created_at: now,
        activates_at: now,
        retires_at: None,
        removes_at: None,
        revoked_at: None,
        destroyed_at: None,
    })
}

/// What every key operation's audit record says about where the key is:
/// its store and, for a device key, the device's reference.
fn key_place(rec: &KeyRecord, detail: &mut serde_json::Value) {
    detail["store"] = json!(rec.key_store().as_str());
    detail["reference"] = json!(rec.reference());
}

fn entry(
    at: Change<'_>,
    action: &str,
    env: &str,
    subject: &str,
    detail: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        at: at.now,
        actor: at.actor.to_string(),
        action: action.to_string(),
        env: Some(env.to_string()),
        subject: Some(subject.to_string()),
        detail,
    }
}

/// Brings `key` into environment `env` on `schedule` (see
/// [`rotation::plan`]), in one transaction with its audit record:
/// `key.rotate` when it replaces a key, else `key.generate` or `key.import`.
/// An environment's first key sets its rotation algorithm.
///
/// `key` was made in this process (an import, or a test's key), so it is a
/// `local` key: an environment whose key store is a device refuses it
/// ([`IssuerError::Conflict`], saying why and what to do instead), and
/// nothing changes.
pub async fn add_key(
    store: &Store,
    root: &RootKey,
    env: &str,
    key: &PrivateKey,
    opts: &KeyOptions,
    schedule: Schedule,
    at: Change<'_>,
) -> Result<AddedKey, IssuerError> {
    // Refused before anything else (the transaction checks again).
    let environment = store.environment(env).await?;
    refuse_outside_key(&environment, opts.origin)?;
    let made = Made::Given(key);
    add(store, root, env, &made, opts, schedule, at, false).await
}

/// Refuses a key made outside `env`'s device key store.
fn refuse_outside_key(env: &Environment, origin: Origin) -> Result<(), IssuerError> {
    if !env.key_store.is_device() {
        return Ok(());
    }
    let (e, s) = (&env.name, env.key_store);
    Err(IssuerError::Conflict(match origin {
        Origin::Imported => format!(
            "environment {e} keeps its keys in the {s} key store: a key cannot be imported into it, because a key whose private half existed outside the device is not a device key (copies of it may exist). \
             Generate the key inside the device instead (`keyward keys generate --env {e}` or `keyward keys rotate --env {e}`), or import it into an environment whose key store is local"
        ),
        Origin::Generated => format!(
            "environment {e} keeps its keys in the {s} key store (it changed while the key was made): nothing was changed; retry"
        ),
    }))
}

/// [`add_key`]; with `adopt_algorithm` the environment's rotation policy
/// takes the key's algorithm (and RSA size) in the same transaction.
#[allow(clippy::too_many_arguments)]
async fn add(
    store: &Store,
    root: &RootKey,
    env: &str,
    made: &Made<'_>,
    opts: &KeyOptions,
    schedule: Schedule,
    at: Change<'_>,
    adopt_algorithm: bool,
) -> Result<AddedKey, IssuerError> {
    let mut tx = store.begin().await?;
    // Seal under the root key the store holds now (a concurrent root-key rotation waits or fails us).
    tx.check_root_key(root).await?;
    let mut environment = tx.environment(env).await?;
    if made.local().is_some() {
        refuse_outside_key(&environment, opts.origin)?;
    }
    let existing = tx.keys(env).await?;
    let plan = rotation::plan(&environment.policy, &existing, at.now, schedule)?;
    let mut rec = record(root, env, made, opts, at.now)?;
    rec.activates_at = plan.activates_at;
    tx.insert_key(&rec).await?;
    for k in &plan.retiring {
        tx.update_key_times(k).await?;
    }
    // The policy that makes keys like this one: its RSA size when it is one
    // keyward generates (an imported key may be larger), else the default.
    let mut adopted = environment.policy.clone();
    adopted.alg = rec.alg;
    adopted.rsa_bits = matches!(rec.alg.family(), KeyFamily::Rsa)
        .then_some(rec.size_bits)
        .filter(|b| keyward_jose::RSA_SIZES.contains(b));
    let policy_updated = if adopt_algorithm {
        KeySpec::for_policy(&adopted) != KeySpec::for_policy(&environment.policy)
    } else {
        existing.is_empty() && environment.policy.alg != rec.alg
    };
    if policy_updated {
        check_policy(&adopted)?;
        environment.policy = adopted;
        tx.update_environment(&environment).await?;
    }
    let action = match opts.origin {
        _ if !plan.retiring.is_empty() => "key.rotate",
        Origin::Generated => "key.generate",
        Origin::Imported => "key.import",
    };
    let mut detail = json!({
        "origin": rec.origin,
        "alg": rec.alg.name(),
        "bits": rec.size_bits,
        "activates_at": rec.activates_at,
        "immediate": schedule == Schedule::Immediate,
        "retiring": plan.retiring.iter().map(|k| json!({
            "kid": k.kid,
            "retires_at": k.retires_at,
            "store": k.key_store().as_str(),
            "reference": k.reference(),
        })).collect::<Vec<_>>(),
    });
    if policy_updated {
        detail["policy_alg"] = json!(rec.alg.name());
    }
    key_place(&rec, &mut detail);
    tx.append_audit(entry(at, action, env, &rec.kid, detail))
        .await?;
    tx.commit().await?;
    Ok(AddedKey {
        key: rec,
        plan,
        policy_updated,
    })
}

/// An environment's first key, generated per its policy and made with it
/// in one transaction.
#[derive(Clone, Copy, Debug)]
pub struct FirstKey<'a> {
    /// The root key to seal it under (checked against the store's).
    pub root: &'a RootKey,
    /// The configured device stores, for an environment whose key store
    /// is one ([`KeyStores::none`] for local keys only).
    pub stores: &'a KeyStores,
    pub opts: &'a KeyOptions,
}

/// Creates environment `env` after [`check_environment`], with its first
/// key (generated per its policy), active at once, in the same transaction
/// (DESIGN rule 3: `env create` makes the first key, as `init` does), in
/// the environment's key store ([`Environment::key_store`]; a device key is
/// destroyed again if the transaction fails). A taken name or issuer URL, a
/// root key that is not the store's, a key store that is not configured or
/// cannot make the policy's algorithm, are refused before the slow
/// generation. Without `first_key` the environment
/// has no key until one is generated or imported; servers report it and do
/// not count it against readiness. Returns the first key.
pub async fn create_environment(
    store: &Store,
    env: &Environment,
    first_key: Option<FirstKey<'_>>,
    at: Change<'_>,
) -> Result<Option<KeyRecord>, IssuerError> {
    check_new_environment(store, env).await?;
    let made = match &first_key {
        Some(f) => {
            store.check_root_key(f.root).await?;
            let spec = KeySpec::for_policy(&env.policy);
            Some(make_key(f.stores, env.key_store, spec, f.opts).await?)
        }
        None => {
            // The store must exist even when no key is made yet.
            if env.key_store.is_device() {
                return Err(IssuerError::invalid(format!(
                    "an environment whose key store is {} is created with its first key (made inside the device); drop --no-key / first_key=false",
                    env.key_store
                )));
            }
            None
        }
    };
    let result = create_with(store, env, first_key, made.as_ref(), at).await;
    if let Some(m) = &made {
        discard_on_failure(m, &result).await;
    }
    result
}

async fn create_with(
    store: &Store,
    env: &Environment,
    first_key: Option<FirstKey<'_>>,
    key: Option<&Made<'_>>,
    at: Change<'_>,
) -> Result<Option<KeyRecord>, IssuerError> {
    let mut tx = store.begin().await?;
    tx.lock_for_change().await?;
    check_free_among(env, &tx.environments().await?)?;
    if let Some(f) = &first_key {
        // Seal under the root key the store holds now.
        tx.check_root_key(f.root).await?;
    }
    create_in(&mut tx, env, at).await?;
    let rec = match first_key.zip(key) {
        Some((f, key)) => Some(first_key_in(&mut tx, &env.name, f.root, key, f.opts, at).await?),
        None => None,
    };
    tx.commit().await?;
    Ok(rec)
}

/// The environment with its audit record, in `tx`.
async fn create_in(tx: &mut Tx<'_>, env: &Environment, at: Change<'_>) -> Result<(), IssuerError> {
    tx.create_environment(env).await?;
    tx.append_audit(entry(
        at,
        "env.create",
        &env.name,
        &env.name,
        json!({"issuer": env.issuer, "policy": env.policy, "key_store": env.key_store, "dpop_nonce": DpopNonce::of(env).as_str()}),
    ))
    .await?;
    Ok(())
}

/// An environment's first key, active at once, with its audit record, in `tx`.
async fn first_key_in(
    tx: &mut Tx<'_>,
    env: &str,
    root: &RootKey,
    key: &Made<'_>,
    opts: &KeyOptions,
    at: Change<'_>,
) -> Result<KeyRecord, IssuerError> {
    let rec = record(root, env, key, opts, at.now)?;
    tx.insert_key(&rec).await?;
    let mut detail = json!({"alg": rec.alg.name(), "bits": rec.size_bits, "activates_at": rec.activates_at, "origin": rec.origin});
    key_place(&rec, &mut detail);
    tx.append_audit(entry(at, "key.generate", env, &rec.kid, detail))
        .await?;
    Ok(rec)
}

/// What [`delete_environment`] removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedEnvironment {
    /// Every key of the environment, published or not.
    pub keys: Vec<String>,
    /// Keys that were still published (pending, active or retired).
    pub published_keys: Vec<String>,
    pub clients: Vec<String>,
}

/// Deletes environment `name` with its keys, clients and tokens, audited as
/// `env.delete`. While it still publishes keys or has clients (its tokens
/// still verify somewhere, its clients still get tokens) it is refused
/// unless `force`.
pub async fn delete_environment(
    store: &Store,
    name: &str,
    force: bool,
    at: Change<'_>,
) -> Result<DeletedEnvironment, IssuerError> {
    let mut tx = store.begin().await?;
    // Check and change under the writer lock: no concurrent change in between.
    tx.lock_for_change().await?;
    let keys = tx.keys(name).await?;
    let clients = tx.client_ids(name).await?;
    let published_keys: Vec<String> = keys
        .iter()
        .filter(|k| k.is_published(at.now))
        .map(|k| k.kid.clone())
        .collect();
    if !force && (!published_keys.is_empty() || !clients.is_empty()) {
        return Err(IssuerError::NeedsForce(format!(
            "environment {name} still has {} published key(s) and {} client(s): deleting it unpublishes its keys (its tokens stop verifying) and removes its clients; \
             retire or revoke its keys and delete its clients first, or pass --force",
            published_keys.len(),
            clients.len()
        )));
    }
    tx.delete_environment(name).await?;
    let deleted = DeletedEnvironment {
        keys: keys.iter().map(|k| k.kid.clone()).collect(),
        published_keys,
        clients,
    };
    tx.append_audit(entry(
        at,
        "env.delete",
        name,
        name,
        json!({
            "forced": force,
            "keys": deleted.keys,
            "published_keys": deleted.published_keys,
            "clients": deleted.clients,
        }),
    ))
    .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// Updates an environment's issuer or policy, after [`check_environment`].
pub async fn update_environment(
    store: &Store,
    env: &Environment,
    at: Change<'_>,
) -> Result<(), IssuerError> {
    check_environment(env)?;
    let mut tx = store.begin().await?;
    tx.lock_for_change().await?;
    check_free_among(env, &tx.environments().await?)?;
    tx.update_environment(env).await?;
    tx.append_audit(entry(
        at,
        "env.update",
        &env.name,
        &env.name,
        json!({"issuer": env.issuer, "policy": env.policy, "key_store": env.key_store, "dpop_nonce": DpopNonce::of(env).as_str()}),
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether an environment's token endpoint requires DPoP server nonces
/// (RFC 9449 §8): `required` or `off` (the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DpopNonce {
    #[default]
    Off,
    Required,
}

impl DpopNonce {
    /// The setting's name, as the admin API and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DpopNonce::Off => "off",
            DpopNonce::Required => "required",
        }
    }

    /// The setting of `env`.
    pub fn of(env: &Environment) -> Self {
        match env.requires_dpop_nonce() {
            true => DpopNonce::Required,
            false => DpopNonce::Off,
        }
    }
}

/// How long one DPoP nonce window lasts: a nonce is accepted in its own
/// window and the next, so between 5 and 10 minutes.
pub const DPOP_NONCE_WINDOW_SECS: i64 = 300;

/// Sets `env`'s DPoP nonce requirement. Turning it on seals a fresh random
/// secret under `root` (checked against the store's root key first; a
/// device root is asked on a blocking thread); an environment that already
/// requires nonces keeps its secret, so nonces handed out stay valid.
/// Turning it off drops the secret. Nothing is written: the caller stores
/// `env` ([`update_environment`], [`create_environment`]).
pub async fn set_dpop_nonce(
    store: &Store,
    env: &mut Environment,
    setting: DpopNonce,
    root: Option<&RootKey>,
) -> Result<(), IssuerError> {
    match setting {
        DpopNonce::Off => env.dpop_nonce_secret = None,
        DpopNonce::Required if env.dpop_nonce_secret.is_some() => {}
        DpopNonce::Required => {
            let root = root.ok_or_else(|| {
                IssuerError::invalid(
                    "requiring DPoP nonces needs the root key (it seals their secret)",
                )
            })?;
            store.check_root_key(root).await?;
            let (root, name) = (root.clone(), env.name.clone());
            let sealed = tokio::task::spawn_blocking(move || {
                keyward_store::sealing::seal_dpop_nonce_secret(&root, &name)
            })
            .await
            .map_err(|e| IssuerError::Unavailable(format!("the sealing task failed: {e}")))??;
            env.dpop_nonce_secret = Some(sealed);
        }
    }
    Ok(())
}

/// The key `env`'s DPoP nonces are made and checked with, from its sealed
/// secret opened with `root`; `None` when it does not require nonces.
pub fn dpop_nonce_key(
    root: &RootKey,
    env: &Environment,
) -> Result<Option<keyward_jose::NonceKey>, IssuerError> {
    let Some(sealed) = &env.dpop_nonce_secret else {
        return Ok(None);
    };
    let secret = keyward_store::sealing::open_dpop_nonce_secret(root, &env.name, sealed)?;
    Ok(Some(keyward_jose::NonceKey::derive(
        &secret,
        &env.name,
        DPOP_NONCE_WINDOW_SECS,
    )))
}

/// A new store's first state, in one transaction: the root key's id,
/// environment `env`, and its first key, active at once.
pub async fn initialize(
    store: &Store,
    root: &RootKey,
    env: &Environment,
    key: &PrivateKey,
    opts: &KeyOptions,
    at: Change<'_>,
) -> Result<KeyRecord, IssuerError> {
    let mut tx: Tx<'_> = store.begin().await?;
    tx.initialize_root(root).await?;
    tx.append_audit(AuditEntry {
        at: at.now,
        actor: at.actor.to_string(),
        action: "store.init".into(),
        env: None,
        subject: None,
        detail: json!({"root_key_id": root.key_id(), "root_key_store": root.store(), "root_key_ref": root.reference()}),
    })
    .await?;
    if env.key_store.is_device() {
        return Err(IssuerError::invalid(
            "a new store's first environment keeps its keys locally; create device environments with `keyward env create --key-store`",
        ));
    }
    create_in(&mut tx, env, at).await?;
    let made = Made::Given(key);
    let rec = first_key_in(&mut tx, &env.name, root, &made, opts, at).await?;
    tx.commit().await?;
    Ok(rec)
}

/// How far a retirement may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetireOptions {
    /// Allow retiring the last key that can sign now or later.
    pub force: bool,
    /// With `force`: the operator acknowledges that the environment's token
    /// endpoint stops signing (503) until another key activates.
    pub accept_outage: bool,
}

/// Retires key `kid` now: it stops signing (if it did) and stays published
/// until its tokens have expired and caches refreshed.
///
/// Refused when it would leave the environment with no key that signs now
/// (the token endpoint would answer 503 until a pending key activates),
/// unless both `force` and `accept_outage` are given; and refused when it
/// would leave no key that can ever sign, unless `force`. The refusal says
/// what to do instead.
pub async fn retire_key(
    store: &Store,
    kid: &str,
    at: Change<'_>,
    opts: RetireOptions,
) -> Result<KeyRecord, IssuerError> {
    let mut tx = store.begin().await?;
    // Check and change under the writer lock: no concurrent change in between.
    tx.lock_for_change().await?;
    let mut rec = find_key(store, &mut tx, kid).await?;
    let env = tx.environment(&rec.env).await?;
    let state = rec.state(at.now);
    match state {
        KeyState::Active | KeyState::Pending => {}
        s => return Err(IssuerError::Conflict(format!("key {kid} is already {s}"))),
    }
    let keys = tx.keys(&rec.env).await?;
    let others: Vec<&KeyRecord> = keys.iter().filter(|k| k.kid != rec.kid).collect();
    let other_active = others.iter().any(|k| k.state(at.now) == KeyState::Active);
    let next_pending = others
        .iter()
        .filter(|k| k.state(at.now) == KeyState::Pending)
        .min_by_key(|k| k.activates_at);
    let stops_signing = state == KeyState::Active && !other_active;
    let e = &rec.env;
    if stops_signing && !(opts.force && opts.accept_outage) {
        let wait = match next_pending {
            Some(p) => format!(
                "; or wait until {} when key {} starts signing, then retire {kid}",
                crate::fmt_time(p.activates_at),
                p.kid
            ),
            None => String::new(),
        };
        return Err(IssuerError::NeedsForce(format!(
            "key {kid} is the only key of environment {e} that signs now: retiring it stops the token endpoint (503 \"no signing key is active\") until another key activates. \
             Run `keyward keys rotate --env {e} --immediate` (it retires {kid} for you){wait}. \
             To retire it anyway and accept the outage, pass --force --accept-outage"
        )));
    }
    if !stops_signing && !other_active && next_pending.is_none() && !opts.force {
        return Err(IssuerError::NeedsForce(format!(
            "key {kid} is the last key of environment {e} that can sign: without it the environment never signs again. \
             Run `keyward keys rotate --env {e}` first, or pass --force"
        )));
    }
    rec.retires_at = Some(at.now);
    rec.removes_at = Some(at.now + rotation::retention_after_retire(&env.policy));
    tx.update_key_times(&rec).await?;
    let mut detail = json!({
        "removes_at": rec.removes_at,
        "forced": opts.force,
        "outage_accepted": stops_signing,
    });
    key_place(&rec, &mut detail);
    tx.append_audit(entry(at, "key.retire", &rec.env, kid, detail))
        .await?;
    tx.commit().await?;
    Ok(rec)
}

/// Revokes key `kid` now: unpublished at once, every token it signed fails
/// verification as soon as verifiers refresh. Returns the record and whether
/// it was the environment's signing key.
///
/// A device key's device object is destroyed at once, after the revocation
/// is committed (best effort: while the device is down, or its store is not
/// configured here, the revocation stands and [`destroy_unpublished`]
/// retries); the returned record's `destroyed_at` says whether it was.
pub async fn revoke_key(
    store: &Store,
    stores: &KeyStores,
    kid: &str,
    at: Change<'_>,
    reason: Option<&str>,
) -> Result<(KeyRecord, bool), IssuerError> {
    let mut tx = store.begin().await?;
    // Check and change under the writer lock: no concurrent change in between.
    tx.lock_for_change().await?;
    let mut rec = find_key(store, &mut tx, kid).await?;
    match rec.state(at.now) {
        KeyState::Revoked | KeyState::Removed => {
            return Err(IssuerError::Conflict(format!(
                "key {kid} is already {}",
                rec.state(at.now)
            )))
        }
        _ => {}
    }
    let keys = tx.keys(&rec.env).await?;
    let was_signing = rotation::signing_key(&keys, at.now).is_some_and(|k| k.kid == rec.kid);
    rec.revoked_at = Some(at.now);
    tx.update_key_times(&rec).await?;
    let mut detail = json!({"reason": reason, "was_signing": was_signing});
    key_place(&rec, &mut detail);
    tx.append_audit(entry(at, "key.revoke", &rec.env, kid, detail))
        .await?;
    tx.commit().await?;
    if rec.key_store().is_device() {
        match destroy_key(store, stores, &rec, at).await {
            Ok(()) => rec.destroyed_at = Some(at.now),
            Err(e) => tracing::warn!(
                kid,
                store = rec.key_store().as_str(),
                reference = rec.reference().unwrap_or(""),
                error = %crate::error::error_chain(&e),
                "key revoked; its device object is not destroyed yet (the scheduler's sweep retries)"
            ),
        }
    }
    Ok((rec, was_signing))
}

/// What [`destroy_unpublished`] did.
#[derive(Debug, Default)]
pub struct DestroySweep {
    /// Kids whose device object was destroyed (or its deletion scheduled).
    pub destroyed: Vec<String>,
    /// Kids whose device object could not be destroyed now, with why; the
    /// next sweep retries.
    pub failed: Vec<(String, IssuerError)>,
}

/// Destroys the device objects of every device key that left the JWKS by
/// `at.now` (removed by time, or revoked) and is not destroyed yet; each in
/// its own transaction with a `key.destroy` audit record naming the store
/// and the reference. A device that fails leaves its keys for the next
/// sweep. Run by the rotation scheduler on every tick.
pub async fn destroy_unpublished(
    store: &Store,
    stores: &KeyStores,
    at: Change<'_>,
) -> Result<DestroySweep, IssuerError> {
    let mut sweep = DestroySweep::default();
    for rec in store.keys_to_destroy(at.now).await? {
        match destroy_key(store, stores, &rec, at).await {
            Ok(()) => sweep.destroyed.push(rec.kid),
            Err(e) => sweep.failed.push((rec.kid, e)),
        }
    }
    Ok(sweep)
}

/// Destroys the device object of `rec` and marks the record, with its
/// `key.destroy` audit record. Another replica marking it first is no
/// error (a device's destroy of a key already gone succeeds).
async fn destroy_key(
    store: &Store,
    stores: &KeyStores,
    rec: &KeyRecord,
    at: Change<'_>,
) -> Result<(), IssuerError> {
    let (Some(device), Some(reference)) = (device_store(stores, rec.key_store())?, rec.reference())
    else {
        return Ok(());
    };
    let r = reference.to_string();
    on_device(&device, move |d| d.destroy(&r)).await?;
    let mut tx = store.begin().await?;
    match tx.mark_destroyed(&rec.kid, at.now).await {
        Ok(()) => {}
        // Another replica's sweep, or a concurrent revoke, marked it.
        Err(StoreError::Conflict { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let why = if rec.revoked_at.is_some_and(|t| t <= at.now) {
        "revoked"
    } else {
        "removed"
    };
    let mut detail = json!({"why": why, "scheduled": device.name() == keyward_signers::AWS_KMS});
    key_place(rec, &mut detail);
    tx.append_audit(entry(at, "key.destroy", &rec.env, &rec.kid, detail))
        .await?;
    tx.commit().await?;
    tracing::info!(
        kid = %rec.kid,
        store = device.name(),
        %reference,
        why,
        "device key destroyed"
    );
    Ok(())
}

/// Finds `kid` as the transaction sees it (its environment comes from the store).
async fn find_key(store: &Store, tx: &mut Tx<'_>, kid: &str) -> Result<KeyRecord, IssuerError> {
    let env = store.key(kid).await?.env;
    tx.keys(&env)
        .await?
        .into_iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| {
            IssuerError::Store(keyward_store::StoreError::NotFound {
                what: "key",
                name: kid.to_string(),
            })
        })
}

/// Opens the signer of a stored key. A local key: its sealed private key,
/// unsealed under `root`, in a [`LocalSigner`]. A device key: a signer of
/// its device store in `stores` ([`keyward_signers::open`]: every
/// signature it makes is verified against the recorded public key before
/// it is used). Callers sign through the [`TokenSigner`] it returns,
/// whatever holds the key.
///
/// Opening a device key waits on the device (for a bounded time): call it
/// from a thread that may block.
pub fn load_signer(
    root: &RootKey,
    stores: &KeyStores,
    rec: &KeyRecord,
) -> Result<Arc<dyn TokenSigner>, IssuerError> {
    match &rec.material {
        KeyMaterial::Sealed(_) => {
            let pkcs8 = open_private_key(root, rec)?;
            let key = PrivateKey::from_der(rec.alg, &pkcs8)?;
            Ok(Arc::new(LocalSigner::new(key, Some(rec.kid.clone()))))
        }
        KeyMaterial::Device { .. } => open_device_signer(stores, rec),
    }
}

/// Opens the signer of device key `rec` through its store in `stores`
/// ([`keyward_signers::open`]: every signature checked), counting a
/// failure in `keyward_signer_errors_total{store,reason}`. Blocks on the
/// device; a local key is refused ([`StoreError::DeviceKey`]'s converse:
/// [`IssuerError::Invalid`]).
pub fn open_device_signer(
    stores: &KeyStores,
    rec: &KeyRecord,
) -> Result<Arc<dyn TokenSigner>, IssuerError> {
    let KeyMaterial::Device { store, reference } = &rec.material else {
        return Err(IssuerError::invalid(format!(
            "key {} is a local key, not a device key",
            rec.kid
        )));
    };
    let device = stores.get(store.as_str()).inspect_err(|e| {
        crate::metrics::signer_error(store.as_str(), e.reason());
    })?;
    let public = public_jwk(rec)?.key;
    keyward_signers::open(device.as_ref(), &rec.kid, reference, &public).map_err(|e| {
        crate::metrics::signer_error(store.as_str(), e.reason());
        IssuerError::KeyStore(e)
    })
}

/// The public JWK of a stored key.
pub fn public_jwk(rec: &KeyRecord) -> Result<Jwk, IssuerError> {
    Ok(Jwk::parse(rec.public_jwk.as_bytes(), rec.alg)?)
}

/// The JWK Set published at `now`: pending, active and retired keys.
pub fn jwks(keys: &[KeyRecord], now: Timestamp) -> Result<JwkSet, IssuerError> {
    let keys = rotation::published(keys, now)
        .map(public_jwk)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JwkSet { keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issuer_under_anothers_endpoints_hides_them() {
        let root = "https://a.example";
        for inner in [
            "https://a.example/oauth2",
            "https://A.example/.well-known/",
            "http://a.example/revocations/x",
            "https://a.example/oauth2/token",
        ] {
            assert!(hides_endpoints_of(inner, root), "{inner}");
        }
        for inner in [
            "https://a.example/prod",
            "https://a.example/oauth2x",
            "https://b.example/oauth2",
            "https://a.example",
        ] {
            assert!(!hides_endpoints_of(inner, root), "{inner}");
        }
        assert!(hides_endpoints_of(
            "https://a.example/prod/oauth2",
            "https://a.example/prod"
        ));
    }
}
