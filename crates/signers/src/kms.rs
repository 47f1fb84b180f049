//! The AWS KMS key store: asymmetric `SIGN_VERIFY` keys made in KMS, signing
//! through the KMS API; symmetric KMS keys as root keys.
//!
//! The SDK is async and [`KeyStore`] blocks, so the store owns a small tokio
//! runtime (two worker threads): each call is spawned there and the calling
//! thread waits on a channel for at most the call timeout. The AWS
//! configuration (credentials, region) is loaded on the first call, so
//! opening the store never touches the network and a server starts while
//! KMS is unreachable.
//!
//! Failures are [`SignerError::Unavailable`] with a reason that is a metric
//! label: `throttled`, `server`, `timeout`, `unreachable` (these four make
//! the store back off: calls fail at once, with the last reason, until the
//! wait is over) and `disabled` (the key is disabled or pending deletion).
//! A missing key is [`SignerError::NotFound`]. Access denied and missing or
//! rejected credentials are [`SignerError::Config`], naming the IAM action
//! refused: retrying does not mend a policy.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::get_public_key::GetPublicKeyOutput;
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, MessageType, SigningAlgorithmSpec, Tag};
use aws_sdk_kms::Client;
use base64::Engine as _;
use keyward_jose::alg::{KeyFamily, DEFAULT_RSA_BITS, MIN_RSA_BITS};
use keyward_jose::seal::KeyWrapper;
use keyward_jose::{Algorithm, Jwk, KeyError, PublicKey, SealError, SigningCost, TokenSigner};
use zeroize::Zeroizing;

use crate::{Backoff, HardwareKey, KeyStore, SignerError, AWS_KMS};

/// How to reach KMS. Credentials come from the standard AWS chain
/// (environment, shared files, SSO, container and instance roles).
#[derive(Clone, Debug)]
pub struct KmsConfig {
    /// The region (default: the AWS chain's, e.g. `AWS_REGION`).
    pub region: Option<String>,
    /// An endpoint URL override (a VPC endpoint; a local test server).
    pub endpoint_url: Option<String>,
    /// The longest one call may take, retries included (default 5 s).
    pub call_timeout: Duration,
    /// After a transient failure (throttled, server, timeout, unreachable)
    /// calls fail at once for this long, doubling while KMS keeps failing
    /// (default 100 ms) ...
    pub backoff_min: Duration,
    /// ... up to this (default 10 s).
    pub backoff_max: Duration,
}

impl Default for KmsConfig {
    fn default() -> Self {
        KmsConfig {
            region: None,
            endpoint_url: None,
            call_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Attempts per call (the first and two retries) for calls that are safe
/// to repeat; `CreateKey` and `CreateAlias` are tried once (a retry after a
/// lost answer would make a second key).
const MAX_ATTEMPTS: u32 = 3;
/// How long a caller waits beyond the call timeout for the runtime to
/// report (the SDK and the task both stop at the call timeout).
const GRACE: Duration = Duration::from_millis(500);
/// The shortest pending window KMS allows before deleting a key.
const DELETION_WINDOW_DAYS: i32 = 7;
/// The tag that names the kid of a signing key made by keyward.
const KID_TAG: &str = "keyward:kid";
/// The tag that names a root key made by keyward.
const ROOT_TAG: &str = "keyward:root-key";
/// The encryption context entry that binds a wrapped data key's AAD.
const AAD_CONTEXT: &str = "keyward-aad";
/// Plaintext KMS accepts in one `Encrypt` request.
const MAX_PLAINTEXT: usize = 4096;

/// Opens the KMS store. Fails only for a configuration that can never work;
/// an unreachable or throttling KMS is reported by each call
/// ([`SignerError::Unavailable`]) and retried with backoff.
pub fn open_store(config: KmsConfig) -> Result<Arc<dyn KeyStore>, SignerError> {
    Ok(Arc::new(KmsStore::open(config)?))
}

fn config_error(message: impl Into<String>) -> SignerError {
    SignerError::Config {
        store: AWS_KMS,
        message: message.into(),
    }
}

fn unavailable(reason: &'static str, detail: impl Into<String>) -> SignerError {
    SignerError::Unavailable {
        store: AWS_KMS,
        reason,
        detail: detail.into(),
    }
}

/// The KMS key store. Clones share the runtime, the client and the backoff.
#[derive(Clone)]
pub struct KmsStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KmsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsStore")
            .field("region", &self.inner.sdk.config.region)
            .field("endpoint_url", &self.inner.sdk.config.endpoint_url)
            .field("call_timeout", &self.inner.call_timeout)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    sdk: Arc<Sdk>,
    call_timeout: Duration,
    backoff: Backoff,
    /// The reason and detail of the last transient failure, repeated while
    /// backing off.
    last_failure: Mutex<Option<(&'static str, String)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Never waits, so the store may be dropped anywhere (even inside
        // another runtime); calls still running end with the runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What the tasks on the runtime hold: the configuration and the client,
/// made on first use.
struct Sdk {
    config: KmsConfig,
    client: tokio::sync::OnceCell<Client>,
}

impl Sdk {
    async fn client(&self) -> Result<Client, SignerError> {
        self.client
            .get_or_try_init(|| async {
                let timeout = self.config.call_timeout;
                // An attempt gets half the call, so a stalled connection
                // leaves time for one retry on a fresh one.
                let attempt = (timeout / 2).max(Duration::from_millis(200)).min(timeout);
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(MAX_ATTEMPTS)
                            .with_initial_backoff(Duration::from_millis(50))
                            .with_max_backoff(Duration::from_secs(1)),
                    )
                    .timeout_config(
                        TimeoutConfig::builder()
                            .operation_timeout(timeout)
                            .operation_attempt_timeout(attempt)
                            .connect_timeout(attempt)
                            .build(),
                    );
                if let Some(region) = &self.config.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some(url) = &self.config.endpoint_url {
                    loader = loader.endpoint_url(url.clone());
                }
                let sdk = loader.load().await;
                if sdk.region().is_none() {
                    return Err(config_error(
                        "no AWS region: set [aws_kms] region in keyward.toml, KEYWARD_AWS_KMS_REGION, or AWS_REGION",
                    ));
                }
                Ok(Client::new(&sdk))
            })
            .await
            .cloned()
    }
}

/// Per-call SDK settings for calls that must not be repeated: one attempt,
/// the whole call timeout.
fn once(timeout: Duration) -> aws_sdk_kms::config::Builder {
    aws_sdk_kms::config::Builder::default()
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(timeout)
                .operation_attempt_timeout(timeout)
                .build(),
        )
}

impl KmsStore {
    /// The store; no network until the first call.
    pub fn open(config: KmsConfig) -> Result<Self, SignerError> {
        if config.call_timeout.is_zero() {
            return Err(config_error("call_timeout must be more than zero"));
        }
        if let Some(region) = &config.region {
            if region.is_empty()
                || !region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(config_error(format!(
                    "region {region:?} is not an AWS region name (like eu-west-1)"
                )));
            }
        }
        if let Some(url) = &config.endpoint_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(config_error(format!(
                    "endpoint_url {url:?} must be an http:// or https:// URL"
                )));
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keyward-kms")
            .enable_all()
            .build()
            .map_err(|e| config_error(format!("cannot start the KMS client's threads: {e}")))?;
        Ok(KmsStore {
            inner: Arc::new(Inner {
                runtime: Some(runtime),
                call_timeout: config.call_timeout,
                backoff: Backoff::new(config.backoff_min, config.backoff_max),
                sdk: Arc::new(Sdk {
                    config,
                    client: tokio::sync::OnceCell::new(),
                }),
                last_failure: Mutex::new(None),
            }),
        })
    }
}

/// Whether a failure says KMS (or the way to it) is down or overloaded:
/// these make the store back off.
fn is_outage(e: &SignerError) -> bool {
    matches!(
        e,
        SignerError::Unavailable {
            reason: "throttled" | "server" | "timeout" | "unreachable",
            ..
        }
    )
}

impl Inner {
    /// Runs `f` with the client on the runtime, after the backoff admits
    /// the call; records the outcome in the backoff.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, SignerError>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SignerError>> + Send + 'static,
        T: Send + 'static,
    {
        let permit = match self.backoff.admit() {
            Ok(p) => p,
            Err((wait, failures)) => {
                let (reason, detail) = self
                    .last_failure
                    .lock()
                    .map(|l| l.clone())
                    .unwrap_or(None)
                    .unwrap_or(("timeout", "KMS failed moments ago".into()));
                return Err(unavailable(
                    reason,
                    format!(
                        "{detail} (not tried: {failures} failure(s) in a row; next try in {} ms)",
                        wait.as_millis().max(1)
                    ),
                ));
            }
        };
        let result = self.run(f);
        match &result {
            Ok(_) => self.backoff.succeeded(),
            Err(e) if is_outage(e) => {
                if let (SignerError::Unavailable { reason, detail, .. }, Ok(mut last)) =
                    (e, self.last_failure.lock())
                {
                    *last = Some((reason, detail.clone()));
                }
                self.backoff.failed(permit);
            }
            // KMS answered (no such key, a disabled key, a refusal): it is
            // up. A configuration error says nothing about KMS.
            // If this call was the probe after a window, the next call
            // probes.
            Err(SignerError::Config { .. }) => self.backoff.release(permit),
            Err(_) => self.backoff.succeeded(),
        }
        result
    }

    /// Runs `f` on the runtime and waits for at most the call timeout,
    /// without the backoff (for the clean-up after a failed step).
    fn run<T, F, Fut>(&self, f: F) -> Result<T, SignerError>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SignerError>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(unavailable("unreachable", "the KMS store is closed"));
        };
        let timeout = self.call_timeout;
        let sdk = self.sdk.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        let task = runtime.spawn(async move {
            let work = async move {
                let client = sdk.client().await?;
                f(client).await
            };
            let result = match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(deadline_error(timeout)),
            };
            let _ = tx.send(result);
        });
        match rx.recv_timeout(timeout + GRACE) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                task.abort();
                Err(deadline_error(timeout))
            }
            Err(RecvTimeoutError::Disconnected) => Err(unavailable(
                "unreachable",
                "the KMS call ended without an answer (the store is shutting down)",
            )),
        }
    }
}

fn deadline_error(timeout: Duration) -> SignerError {
    unavailable(
        "timeout",
        format!("no answer from KMS within {} ms", timeout.as_millis()),
    )
}

/// The error of the first source in `e`'s chain of type `T`.
fn find_source<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// `e` and its sources, `: `-separated, bounded.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    if out.len() > 600 {
        let mut end = 600;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// What a KMS error code means to keyward.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Throttled,
    Server,
    NotFound,
    Disabled,
    Denied,
    /// KMS refused the request for this key: wrong key usage or spec, a
    /// signature that is not this key's, a request KMS finds invalid.
    /// Retrying the same request fails the same way.
    KeyRefused,
    Other,
}

fn kind_of(code: &str, status: u16) -> Kind {
    match code {
        "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException" => {
            Kind::Throttled
        }
        "KMSInternalException"
        | "DependencyTimeoutException"
        | "InternalFailure"
        | "ServiceUnavailableException"
        | "ServiceUnavailable" => Kind::Server,
        "NotFoundException" => Kind::NotFound,
        "KMSInvalidStateException" | "DisabledException" => Kind::Disabled,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidClientTokenId"
        // Expired credentials: the SDK's credential cache refreshes
        // temporary credentials ahead of their expiry, so a request still
        // signed with an expired token means the source itself hands out
        // expired ones (static keys of an expired session in the
        // environment or a profile, a stale SSO cache). Retrying does not
        // mend that until someone renews them: a configuration error.
        | "ExpiredTokenException"
        | "ExpiredToken" => Kind::Denied,
        "ValidationException"
        | "InvalidKeyUsageException"
        | "IncorrectKeyException"
        | "KMSInvalidSignatureException"
        | "UnsupportedOperationException"
        | "InvalidGrantTokenException" => Kind::KeyRefused,
        _ if status == 429 => Kind::Throttled,
        _ if status >= 500 => Kind::Server,
        _ => Kind::Other,
    }
}

/// Maps an SDK error of the call `action` (the IAM action, `kms:Sign`) on
/// `key` (an ARN, alias or `*`) to a [`SignerError`].
fn classify<E>(action: &'static str, key: &str, err: SdkError<E>) -> SignerError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => unavailable(
            "timeout",
            format!("{action}: no answer from KMS within the call timeout (retries included)"),
        ),
        SdkError::DispatchFailure(d) => {
            if let Some(c) =
                find_source::<aws_credential_types::provider::error::CredentialsError>(&err)
            {
                return credentials_error(action, c);
            }
            if d.is_timeout() {
                unavailable("timeout", format!("{action}: {}", chain(&err)))
            } else {
                unavailable(
                    "unreachable",
                    format!("{action}: cannot reach KMS: {}", chain(&err)),
                )
            }
        }
        SdkError::ResponseError(r) => unavailable(
            "server",
            format!(
                "{action}: KMS answered HTTP {} with a body the SDK cannot read",
                r.raw().status().as_u16()
            ),
        ),
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            let code = e.code().unwrap_or("");
            let message = e.message().unwrap_or("");
            let request = e
                .meta()
                .request_id()
                .map(|id| format!(", request {id}"))
                .unwrap_or_default();
            let what = format!(
                "{action}: {} (HTTP {status}{request}){}{}",
                if code.is_empty() { "error" } else { code },
                if message.is_empty() { "" } else { ": " },
                message
            );
            match kind_of(code, status) {
                Kind::Throttled => unavailable("throttled", what),
                Kind::Server => unavailable("server", what),
                Kind::NotFound => SignerError::NotFound {
                    store: AWS_KMS,
                    reference: key.to_string(),
                },
                Kind::Disabled => unavailable("disabled", what),
                Kind::Denied => config_error(format!(
                    "AWS refused {action} on {key}: grant {action} to keyward's role (docs/hsm-kms.md, AWS KMS, IAM policy) or fix its credentials; {what}"
                )),
                Kind::KeyRefused => SignerError::Mismatch {
                    store: AWS_KMS,
                    reference: key.to_string(),
                    why: format!("KMS refuses this use of the key: {what}"),
                },
                Kind::Other => unavailable("device", what),
            }
        }
        SdkError::ConstructionFailure(_) => config_error(format!(
            "{action}: cannot build the request: {}",
            chain(&err)
        )),
        _ => unavailable("device", format!("{action}: {}", chain(&err))),
    }
}

/// Maps a failure of the AWS credential chain during `action`. A
/// provider that timed out or failed (IMDS, ECS, SSO, STS hiccups) may
/// answer on the next try: transient. No credentials, a bad
/// configuration or an error the chain does not handle: fix and restart.
fn credentials_error(
    action: &'static str,
    c: &aws_credential_types::provider::error::CredentialsError,
) -> SignerError {
    use aws_credential_types::provider::error::CredentialsError as C;
    match c {
        C::ProviderTimedOut(_) => unavailable(
            "timeout",
            format!("{action}: the AWS credential provider timed out: {}", chain(c)),
        ),
        C::ProviderError(_) => unavailable(
            "unreachable",
            format!("{action}: the AWS credential provider failed: {}", chain(c)),
        ),
        _ => config_error(format!(
            "no usable AWS credentials for {action} (standard chain: environment, profile, SSO, container or instance role): {}",
            chain(c)
        )),
    }
}

/// Whether `reference` names one KMS key (not an alias) by its ARN.
fn key_arn(reference: &str) -> Result<&str, SignerError> {
    let ok = reference.starts_with("arn:aws")
        && reference.split(':').nth(2) == Some("kms")
        && reference
            .split_once(":key/")
            .is_some_and(|(_, id)| !id.is_empty() && !id.contains([':', '/']))
        && reference.len() <= 2048
        && reference.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(reference)
    } else {
        Err(SignerError::Mismatch {
            store: AWS_KMS,
            reference: reference.chars().take(200).collect(),
            why: "not the ARN of a KMS key (arn:aws:kms:<region>:<account>:key/<id>)".into(),
        })
    }
}

/// The key id at the end of a key ARN. `ScheduleKeyDeletion` is given the
/// key id: AWS takes either, moto 5.2 fails (HTTP 500) on an ARN, and the
/// call cannot reach another account's key anyway.
fn key_id_of(arn: &str) -> &str {
    arn.rsplit_once(":key/").map_or(arn, |(_, id)| id)
}

/// The KMS key spec and signing algorithm of `alg`; refuses what this
/// store does not make.
fn spec_of(
    alg: Algorithm,
    rsa_bits: Option<u32>,
) -> Result<(KeySpec, SigningAlgorithmSpec), SignerError> {
    let untested = |offered: &str| {
        SignerError::Unsupported {
        store: AWS_KMS,
        alg: alg.name().into(),
        why: format!(
            "AWS KMS offers {offered} keys, but keyward has not tested them against KMS in this release (its KMS test server, moto 5.2, does not make them)"
        ),
    }
    };
    let no_size = || -> Result<(), SignerError> {
        match rsa_bits {
            None => Ok(()),
            Some(_) => Err(SignerError::Key(KeyError::Malformed(format!(
                "a key size applies to RSA only, not {alg}"
            )))),
        }
    };
    let rsa = || -> Result<KeySpec, SignerError> {
        match rsa_bits.unwrap_or(DEFAULT_RSA_BITS) {
            2048 => Ok(KeySpec::Rsa2048),
            3072 => Ok(KeySpec::Rsa3072),
            4096 => Ok(KeySpec::Rsa4096),
            b if (b as usize) < MIN_RSA_BITS => {
                Err(SignerError::Key(KeyError::RsaTooSmall(b as usize)))
            }
            b => Err(SignerError::Unsupported {
                store: AWS_KMS,
                alg: format!("{alg} with {b}-bit keys"),
                why: "KMS makes RSA keys of 2048, 3072 or 4096 bits".into(),
            }),
        }
    };
    Ok(match alg {
        Algorithm::RS256 => (rsa()?, SigningAlgorithmSpec::RsassaPkcs1V15Sha256),
        Algorithm::RS384 => (rsa()?, SigningAlgorithmSpec::RsassaPkcs1V15Sha384),
        Algorithm::RS512 => (rsa()?, SigningAlgorithmSpec::RsassaPkcs1V15Sha512),
        Algorithm::PS256 => (rsa()?, SigningAlgorithmSpec::RsassaPssSha256),
        Algorithm::PS384 => (rsa()?, SigningAlgorithmSpec::RsassaPssSha384),
        Algorithm::PS512 => (rsa()?, SigningAlgorithmSpec::RsassaPssSha512),
        Algorithm::ES256 => {
            no_size()?;
            (KeySpec::EccNistP256, SigningAlgorithmSpec::EcdsaSha256)
        }
        Algorithm::ES384 => {
            no_size()?;
            (KeySpec::EccNistP384, SigningAlgorithmSpec::EcdsaSha384)
        }
        Algorithm::ES512 => {
            no_size()?;
            (KeySpec::EccNistP521, SigningAlgorithmSpec::EcdsaSha512)
        }
        Algorithm::EdDSA => return Err(untested("Ed25519 (ECC_NIST_EDWARDS25519)")),
        Algorithm::MlDsa44 => return Err(untested("ML-DSA (ML_DSA_44)")),
        Algorithm::MlDsa65 => return Err(untested("ML-DSA (ML_DSA_65)")),
        Algorithm::MlDsa87 => return Err(untested("ML-DSA (ML_DSA_87)")),
    })
}

/// The key spec of a public key already made (RSA by its size).
fn spec_of_public(public: &PublicKey) -> Result<(KeySpec, SigningAlgorithmSpec), SignerError> {
    let bits = match public.algorithm().family() {
        KeyFamily::Rsa => Some(public.bits()),
        _ => None,
    };
    spec_of(public.algorithm(), bits)
}

/// A kid must fit a KMS tag value: at most 256 characters of letters,
/// digits, spaces and `_ . : / = + - @`.
fn check_kid(kid: &str) -> Result<(), SignerError> {
    let ok = !kid.is_empty()
        && kid.chars().count() <= 256
        && kid
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SignerError::Key(KeyError::Malformed(format!(
            "kid {:?} cannot name a KMS key: a KMS tag value has 1 to 256 letters, digits, spaces or _ . : / = + - @",
            kid.chars().take(80).collect::<String>()
        ))))
    }
}

/// Checks what `GetPublicKey` said about the key at `arn` against what a
/// key of `alg` must be, and returns its public key.
fn public_of(
    arn: &str,
    alg: Algorithm,
    rsa_bits: Option<u32>,
    out: &GetPublicKeyOutput,
) -> Result<PublicKey, SignerError> {
    let mismatch = |why: String| SignerError::Mismatch {
        store: AWS_KMS,
        reference: arn.to_string(),
        why,
    };
    let (spec, signing) = spec_of(alg, rsa_bits)?;
    if out.key_usage() != Some(&KeyUsageType::SignVerify) {
        return Err(mismatch(format!(
            "its key usage is {}, not SIGN_VERIFY",
            out.key_usage().map(|u| u.as_str()).unwrap_or("unknown")
        )));
    }
    // KeySpec, or the field it replaced (all moto 5.2 sends).
    #[allow(deprecated)]
    let found = out
        .key_spec()
        .map(|s| s.as_str())
        .or_else(|| out.customer_master_key_spec().map(|s| s.as_str()));
    if found != Some(spec.as_str()) {
        return Err(mismatch(format!(
            "its key spec is {}, not {} (for {alg})",
            found.unwrap_or("unknown"),
            spec.as_str()
        )));
    }
    if !out.signing_algorithms().contains(&signing) {
        return Err(mismatch(format!(
            "it does not offer {} (for {alg})",
            signing.as_str()
        )));
    }
    let der = out
        .public_key()
        .ok_or_else(|| mismatch("KMS returned no public key".into()))?;
    Ok(PublicKey::from_der(alg, der.as_ref())?)
}

async fn get_public_key(client: &Client, arn: &str) -> Result<GetPublicKeyOutput, SignerError> {
    client
        .get_public_key()
        .key_id(arn)
        .send()
        .await
        .map_err(|e| classify("kms:GetPublicKey", arn, e))
}

/// `ScheduleKeyDeletion` of `key` with keyward's window: what `destroy` and
/// the clean-up of a failed `generate` both send.
async fn schedule_deletion(c: Client, key: String) -> Result<(), SignerError> {
    c.schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(DELETION_WINDOW_DAYS)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify("kms:ScheduleKeyDeletion", &key, e))
}

impl KmsStore {
    /// Schedules the deletion of a key made moments ago whose later step
    /// failed, so nothing usable is left behind. Not held back by the
    /// backoff; a failure is logged with the ARN to delete by hand.
    fn discard(&self, arn: &str, because: &SignerError) {
        let key = key_id_of(arn).to_string();
        let r = self.inner.run(move |c| schedule_deletion(c, key));
        match r {
            Ok(()) => tracing::warn!(
                store = AWS_KMS,
                arn,
                reason = because.reason(),
                "a KMS key made moments ago was scheduled for deletion: a later step failed"
            ),
            Err(e) => tracing::error!(
                store = AWS_KMS,
                arn,
                reason = because.reason(),
                error = %e,
                "a KMS key made moments ago could not be scheduled for deletion; schedule it by hand"
            ),
        }
    }

    fn describe(&self, key: &str) -> Result<aws_sdk_kms::types::KeyMetadata, SignerError> {
        let k = key.to_string();
        self.inner.call(move |c| async move {
            let out = c
                .describe_key()
                .key_id(&k)
                .send()
                .await
                .map_err(|e| classify("kms:DescribeKey", &k, e))?;
            out.key_metadata.ok_or_else(|| {
                unavailable(
                    "device",
                    format!("kms:DescribeKey: no key metadata for {k}"),
                )
            })
        })
    }
}

impl KeyStore for KmsStore {
    fn name(&self) -> &'static str {
        AWS_KMS
    }

    fn check_algorithm(&self, alg: Algorithm, rsa_bits: Option<u32>) -> Result<(), SignerError> {
        spec_of(alg, rsa_bits).map(|_| ())
    }

    fn generate(
        &self,
        kid: &str,
        alg: Algorithm,
        rsa_bits: Option<u32>,
    ) -> Result<HardwareKey, SignerError> {
        let (spec, _) = spec_of(alg, rsa_bits)?;
        check_kid(kid)?;
        let timeout = self.inner.call_timeout;
        let tag = Tag::builder()
            .tag_key(KID_TAG)
            .tag_value(kid)
            .build()
            .map_err(|e| config_error(format!("kms:CreateKey: {e}")))?;
        let description = format!("keyward signing key {kid}");
        let arn = self.inner.call(move |c| async move {
            let out = c
                .create_key()
                .key_usage(KeyUsageType::SignVerify)
                .key_spec(spec)
                .description(description)
                .tags(tag)
                .customize()
                .config_override(once(timeout))
                .send()
                .await
                .map_err(|e| classify("kms:CreateKey", "*", e))?;
            out.key_metadata
                .and_then(|m| m.arn)
                .ok_or_else(|| unavailable("device", "kms:CreateKey: KMS returned no key ARN"))
        })?;
        let key = arn.clone();
        let checked = self
            .inner
            .call(move |c| async move { get_public_key(&c, &key).await })
            .and_then(|out| public_of(&arn, alg, rsa_bits, &out));
        match checked {
            Ok(public) => {
                tracing::info!(
                    store = AWS_KMS,
                    kid,
                    alg = alg.name(),
                    arn,
                    "made a KMS signing key"
                );
                Ok(HardwareKey {
                    reference: arn,
                    public,
                })
            }
            Err(e) => {
                self.discard(&arn, &e);
                Err(e)
            }
        }
    }

    fn open(
        &self,
        kid: &str,
        reference: &str,
        public: &PublicKey,
    ) -> Result<Arc<dyn TokenSigner>, SignerError> {
        let arn = key_arn(reference)?.to_string();
        let alg = public.algorithm();
        let (_, signing) = spec_of_public(public)?;
        let bits = match public.algorithm().family() {
            KeyFamily::Rsa => Some(public.bits()),
            _ => None,
        };
        let key = arn.clone();
        let out = self
            .inner
            .call(move |c| async move { get_public_key(&c, &key).await })?;
        let found = public_of(&arn, alg, bits, &out)?;
        if found.to_spki_der() != public.to_spki_der() {
            return Err(SignerError::Mismatch {
                store: AWS_KMS,
                reference: arn,
                why: "KMS holds another public key at this ARN".into(),
            });
        }
        Ok(Arc::new(KmsSigner {
            inner: self.inner.clone(),
            kid: kid.to_string(),
            arn: Arc::from(arn),
            alg,
            signing,
            jwk: public.to_jwk(Some(kid.to_string())),
        }))
    }

    fn destroy(&self, reference: &str) -> Result<(), SignerError> {
        let arn = key_arn(reference)?.to_string();
        let meta = match self.describe(&arn) {
            Ok(m) => m,
            Err(SignerError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion) = meta.key_state()
        {
            return Ok(());
        }
        if meta.key_usage() != Some(&KeyUsageType::SignVerify) {
            return Err(SignerError::Mismatch {
                store: AWS_KMS,
                reference: arn,
                why: format!(
                    "its key usage is {}: keyward destroys only the signing keys it made",
                    meta.key_usage().map(|u| u.as_str()).unwrap_or("unknown")
                ),
            });
        }
        let key = meta.key_id().to_string();
        let r = self.inner.call(move |c| schedule_deletion(c, key));
        match r {
            Ok(()) => {
                tracing::info!(
                    store = AWS_KMS,
                    arn,
                    days = DELETION_WINDOW_DAYS,
                    "scheduled the deletion of a KMS signing key"
                );
                Ok(())
            }
            Err(SignerError::NotFound { .. }) => Ok(()),
            // AWS refuses to schedule a key already pending deletion
            // (KMSInvalidStateException): fine if that is the state now.
            Err(
                e @ SignerError::Unavailable {
                    reason: "disabled", ..
                },
            ) => match self.describe(&arn).map(|m| m.key_state) {
                Ok(Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion))
                | Err(SignerError::NotFound { .. }) => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn check(&self) -> Result<(), SignerError> {
        self.inner.call(|c| async move {
            c.list_keys()
                .limit(1)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("kms:ListKeys", "*", e))
        })
    }

    fn root_key(&self, name: &str, create: bool) -> Result<Arc<dyn KeyWrapper>, SignerError> {
        let is_alias = name.starts_with("alias/");
        let valid = !name.is_empty()
            && name.len() <= 2048
            && name.bytes().all(|b| b.is_ascii_graphic())
            && (is_alias && name.len() > "alias/".len() || key_arn(name).is_ok() || {
                // A key id: a UUID, or mrk- and a UUID.
                let id = name.strip_prefix("mrk-").unwrap_or(name);
                id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            });
        if !valid {
            return Err(config_error(format!(
                "root key {:?} is not a KMS key id, key ARN or alias/<name>",
                name.chars().take(200).collect::<String>()
            )));
        }
        if name.starts_with("alias/aws/") {
            return Err(config_error(format!(
                "{name} is an AWS managed key, which only AWS services may use; name a customer managed key"
            )));
        }
        let meta = match self.describe(name) {
            Ok(m) => m,
            Err(SignerError::NotFound { .. }) if create && is_alias => self.create_root(name)?,
            Err(SignerError::NotFound { .. }) if create => {
                return Err(config_error(format!(
                    "no KMS key {name}, and KMS chooses key ids itself: name the root key by an alias (aws-kms:alias/<name>) to have keyward make it"
                )))
            }
            Err(e) => return Err(e),
        };
        let arn = meta
            .arn()
            .ok_or_else(|| unavailable("device", "kms:DescribeKey: no key ARN"))?
            .to_string();
        if meta.key_usage() != Some(&KeyUsageType::EncryptDecrypt)
            || meta.key_spec() != Some(&KeySpec::SymmetricDefault)
        {
            return Err(config_error(format!(
                "{name} ({arn}) is a {} {} key; a root key must be a SYMMETRIC_DEFAULT ENCRYPT_DECRYPT key",
                meta.key_spec().map(|s| s.as_str()).unwrap_or("unknown"),
                meta.key_usage().map(|u| u.as_str()).unwrap_or("unknown")
            )));
        }
        match meta.key_state() {
            Some(KeyState::Enabled) | None => {}
            Some(state) => {
                return Err(unavailable(
                    "disabled",
                    format!("root key {name} ({arn}) is {}", state.as_str()),
                ))
            }
        }
        let id = keyward_jose::crypto::sha256_parts(&[
            b"keyward-root-key-id-v1\0aws-kms\0",
            arn.as_bytes(),
        ]);
        Ok(Arc::new(KmsWrapper {
            inner: self.inner.clone(),
            key_id: keyward_jose::crypto::hex(&id[..8]),
            arn: Arc::from(arn),
        }))
    }
}

impl KmsStore {
    /// Makes a symmetric root key and names it `alias`. When another
    /// process made the alias first, its key is used and ours discarded.
    fn create_root(&self, alias: &str) -> Result<aws_sdk_kms::types::KeyMetadata, SignerError> {
        let timeout = self.inner.call_timeout;
        let tag = Tag::builder()
            .tag_key(ROOT_TAG)
            .tag_value(alias)
            .build()
            .map_err(|e| config_error(format!("kms:CreateKey: {e}")))?;
        let meta = self.inner.call(move |c| async move {
            c.create_key()
                .key_usage(KeyUsageType::EncryptDecrypt)
                .key_spec(KeySpec::SymmetricDefault)
                .description("keyward root key")
                .tags(tag)
                .customize()
                .config_override(once(timeout))
                .send()
                .await
                .map_err(|e| classify("kms:CreateKey", "*", e))?
                .key_metadata
                .ok_or_else(|| unavailable("device", "kms:CreateKey: no key metadata"))
        })?;
        let arn = meta
            .arn()
            .ok_or_else(|| unavailable("device", "kms:CreateKey: KMS returned no key ARN"))?
            .to_string();
        let (a, target) = (alias.to_string(), arn.clone());
        let aliased = self.inner.call(move |c| async move {
            match c
                .create_alias()
                .alias_name(&a)
                .target_key_id(&target)
                .customize()
                .config_override(once(timeout))
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_already_exists_exception()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(classify("kms:CreateAlias", &a, e)),
            }
        });
        match aliased {
            Ok(true) => {
                tracing::info!(store = AWS_KMS, alias, arn, "made a KMS root key");
                Ok(meta)
            }
            Ok(false) => {
                let raced = config_error("another process named the root key first");
                self.discard(&arn, &raced);
                self.describe(alias)
            }
            Err(e) => {
                self.discard(&arn, &e);
                Err(e)
            }
        }
    }
}

/// Signs through KMS `Sign` with `MessageType=DIGEST`: the JWS signing
/// input can exceed the 4 KiB a `RAW` message may have, and only its
/// digest leaves the process.
struct KmsSigner {
    inner: Arc<Inner>,
    kid: String,
    arn: Arc<str>,
    alg: Algorithm,
    signing: SigningAlgorithmSpec,
    jwk: Jwk,
}

impl TokenSigner for KmsSigner {
    fn kid(&self) -> &str {
        &self.kid
    }
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
    fn public_jwk(&self) -> Jwk {
        self.jwk.clone()
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, KeyError> {
        let digest =
            keyward_jose::crypto::signing_digest(self.alg, signing_input).ok_or_else(|| {
                KeyError::Unavailable {
                    store: AWS_KMS,
                    reason: "unsupported",
                    detail: format!("{} is not signed over a digest", self.alg),
                }
            })?;
        let (arn, signing) = (self.arn.clone(), self.signing.clone());
        let der = self.inner.call(move |c| async move {
            let out = c
                .sign()
                .key_id(&*arn)
                .message(Blob::new(digest))
                .message_type(MessageType::Digest)
                .signing_algorithm(signing)
                .send()
                .await
                .map_err(|e| classify("kms:Sign", &arn, e))?;
            out.signature
                .map(Blob::into_inner)
                .ok_or_else(|| unavailable("device", "kms:Sign: KMS returned no signature"))
        })?;
        match self.alg.family() {
            KeyFamily::Ec(_) => {
                keyward_jose::crypto::ecdsa_der_to_jws(self.alg, &der).map_err(|e| {
                    KeyError::Unavailable {
                        store: AWS_KMS,
                        reason: "bad_signature",
                        detail: format!(
                            "kms:Sign on {}: not a strict DER ECDSA signature: {e}",
                            self.arn
                        ),
                    }
                })
            }
            _ => Ok(der),
        }
    }
    fn cost(&self) -> SigningCost {
        SigningCost::Waits
    }
    fn store(&self) -> &'static str {
        AWS_KMS
    }
}

/// A symmetric KMS key that wraps data keys with `Encrypt` and unwraps
/// them with `Decrypt`, the AAD bound as encryption context.
struct KmsWrapper {
    inner: Arc<Inner>,
    arn: Arc<str>,
    key_id: String,
}

fn aad_context(aad: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aad)
}

/// Encrypts and decrypts a fixed, public probe with the key at `arn`:
/// `Ok` when keyward may use the key both ways.
async fn probe(client: &Client, arn: &str) -> Result<(), SignerError> {
    const PROBE: &[u8] = b"keyward root key probe";
    let sealed = client
        .encrypt()
        .key_id(arn)
        .plaintext(Blob::new(PROBE))
        .encryption_context("keyward-probe", "1")
        .send()
        .await
        .map_err(|e| classify("kms:Encrypt", arn, e))?
        .ciphertext_blob
        .ok_or_else(|| unavailable("device", "kms:Encrypt: KMS returned no ciphertext"))?;
    let out = client
        .decrypt()
        .key_id(arn)
        .ciphertext_blob(sealed)
        .encryption_context("keyward-probe", "1")
        .send()
        .await
        .map_err(|e| classify("kms:Decrypt", arn, e))?;
    if out.plaintext().map(|p| p.as_ref()) == Some(PROBE) {
        Ok(())
    } else {
        Err(unavailable(
            "device",
            "kms:Decrypt: the probe did not round-trip",
        ))
    }
}

impl KeyWrapper for KmsWrapper {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }
    fn store(&self) -> &'static str {
        AWS_KMS
    }
    fn reference(&self) -> String {
        format!("{AWS_KMS}:{}", self.arn)
    }
    fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<Vec<u8>, SealError> {
        if data_key.is_empty() || data_key.len() > MAX_PLAINTEXT {
            return Err(SealError::BadRootKey(format!(
                "a data key to wrap has 1 to {MAX_PLAINTEXT} bytes, not {}",
                data_key.len()
            )));
        }
        // This copy moves into the SDK, which frees it (and the request
        // body it serializes) without zeroing: beyond keyward's reach.
        let plaintext = Blob::new(data_key.to_vec());
        let (arn, context) = (self.arn.clone(), aad_context(aad));
        Ok(self.inner.call(move |c| async move {
            let out = c
                .encrypt()
                .key_id(&*arn)
                .plaintext(plaintext)
                .encryption_context(AAD_CONTEXT, context)
                .send()
                .await
                .map_err(|e| classify("kms:Encrypt", &arn, e))?;
            out.ciphertext_blob
                .map(Blob::into_inner)
                .ok_or_else(|| unavailable("device", "kms:Encrypt: KMS returned no ciphertext"))
        })?)
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if wrapped.is_empty() {
            return Err(SealError::OpenFailed);
        }
        let blob = Blob::new(wrapped.to_vec());
        let (arn, context) = (self.arn.clone(), aad_context(aad));
        let opened = self.inner.call(move |c| async move {
            let r = c
                .decrypt()
                .key_id(&*arn)
                .ciphertext_blob(blob)
                .encryption_context(AAD_CONTEXT, context)
                .send()
                .await;
            match r {
                Ok(mut out) => out
                    .plaintext
                    .take()
                    .map(|p| Some(Zeroizing::new(p.into_inner())))
                    .ok_or_else(|| unavailable("device", "kms:Decrypt: KMS returned no plaintext")),
                Err(e) => match e.as_service_error() {
                    // Altered, another context, or another key's ciphertext:
                    // KMS answered, and the answer is no.
                    Some(s)
                        if s.is_invalid_ciphertext_exception()
                            || s.is_incorrect_key_exception() =>
                    {
                        Ok(None)
                    }
                    // Refused: keyward lacks kms:Decrypt, or the ciphertext
                    // names a key it may not use (another key's, or an
                    // altered header; moto says so for another key where
                    // AWS says IncorrectKeyException). A probe round trip
                    // with this key tells which.
                    Some(s) if s.code() == Some("AccessDeniedException") => {
                        match probe(&c, &arn).await {
                            Ok(()) => Ok(None),
                            Err(p) if is_outage(&p) => Err(p),
                            Err(_) => Err(classify("kms:Decrypt", &arn, e)),
                        }
                    }
                    _ => Err(classify("kms:Decrypt", &arn, e)),
                },
            }
        })?;
        opened.ok_or(SealError::OpenFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_reasons() {
        assert_eq!(kind_of("ThrottlingException", 400), Kind::Throttled);
        assert_eq!(kind_of("LimitExceededException", 400), Kind::Throttled);
        assert_eq!(kind_of("", 429), Kind::Throttled);
        assert_eq!(kind_of("KMSInternalException", 500), Kind::Server);
        assert_eq!(kind_of("DependencyTimeoutException", 503), Kind::Server);
        assert_eq!(kind_of("Whatever", 502), Kind::Server);
        assert_eq!(kind_of("NotFoundException", 400), Kind::NotFound);
        assert_eq!(kind_of("KMSInvalidStateException", 400), Kind::Disabled);
        assert_eq!(kind_of("DisabledException", 400), Kind::Disabled);
        assert_eq!(kind_of("AccessDeniedException", 400), Kind::Denied);
        assert_eq!(kind_of("UnrecognizedClientException", 400), Kind::Denied);
        assert_eq!(kind_of("ExpiredTokenException", 400), Kind::Denied);
        for code in [
            "ValidationException",
            "InvalidKeyUsageException",
            "IncorrectKeyException",
            "KMSInvalidSignatureException",
        ] {
            assert_eq!(kind_of(code, 400), Kind::KeyRefused, "{code}");
        }
        assert_eq!(kind_of("SomethingNew", 400), Kind::Other);
    }

    #[test]
    fn credential_errors_map_to_reasons() {
        use aws_credential_types::provider::error::CredentialsError as C;
        let transient = [
            (C::provider_timed_out(Duration::from_secs(1)), "timeout"),
            (C::provider_error("IMDS answered 500"), "unreachable"),
        ];
        for (e, reason) in transient {
            let got = credentials_error("kms:Sign", &e);
            assert!(got.is_transient(), "{got:?}");
            assert_eq!(got.reason(), reason, "{got:?}");
        }
        for e in [
            C::not_loaded("no credentials in the chain"),
            C::invalid_configuration("bad profile"),
            C::unhandled("something else"),
        ] {
            let got = credentials_error("kms:Sign", &e);
            assert!(matches!(got, SignerError::Config { .. }), "{got:?}");
            assert!(!got.is_transient());
        }
    }

    #[test]
    fn only_key_arns_are_references() {
        assert!(key_arn(
            "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        )
        .is_ok());
        assert!(key_arn("arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1").is_ok());
        for bad in [
            "",
            "alias/keyward",
            "arn:aws:kms:eu-west-1:123456789012:alias/keyward",
            "arn:aws:s3:::bucket/key/x",
            "arn:aws:kms:eu-west-1:123456789012:key/",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:123456789012:key/a b",
        ] {
            assert!(
                matches!(key_arn(bad), Err(SignerError::Mismatch { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn algorithms_map_to_specs() {
        assert_eq!(spec_of(Algorithm::RS256, None).unwrap().0, KeySpec::Rsa4096);
        assert_eq!(
            spec_of(Algorithm::PS384, Some(3072)).unwrap(),
            (KeySpec::Rsa3072, SigningAlgorithmSpec::RsassaPssSha384)
        );
        assert_eq!(
            spec_of(Algorithm::ES512, None).unwrap(),
            (KeySpec::EccNistP521, SigningAlgorithmSpec::EcdsaSha512)
        );
        assert!(matches!(
            spec_of(Algorithm::RS256, Some(1024)),
            Err(SignerError::Key(KeyError::RsaTooSmall(1024)))
        ));
        assert!(matches!(
            spec_of(Algorithm::RS256, Some(8192)),
            Err(SignerError::Unsupported { .. })
        ));
        assert!(matches!(
            spec_of(Algorithm::ES256, Some(2048)),
            Err(SignerError::Key(KeyError::Malformed(_)))
        ));
        for alg in [
            Algorithm::EdDSA,
            Algorithm::MlDsa44,
            Algorithm::MlDsa65,
            Algorithm::MlDsa87,
        ] {
            let e = spec_of(alg, None).unwrap_err();
            assert!(matches!(e, SignerError::Unsupported { store: AWS_KMS, .. }));
            let text = e.to_string();
            assert!(
                text.contains("aws-kms") && text.contains(alg.name()),
                "{text}"
            );
        }
    }

    #[test]
    fn kids_must_fit_a_tag_value() {
        assert!(check_kid("k-2026-01_a.b:c/d=e+f@g").is_ok());
        assert!(check_kid(&"a".repeat(256)).is_ok());
        for bad in ["", "a<b", "a\nb", "a#b", &"a".repeat(257)] {
            assert!(check_kid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_without_network() {
        let base = KmsConfig::default();
        for config in [
            KmsConfig {
                call_timeout: Duration::ZERO,
                ..base.clone()
            },
            KmsConfig {
                region: Some("EU WEST".into()),
                ..base.clone()
            },
            KmsConfig {
                endpoint_url: Some("127.0.0.1:4566".into()),
                ..base.clone()
            },
        ] {
            assert!(matches!(
                open_store(config),
                Err(SignerError::Config { store: AWS_KMS, .. })
            ));
        }
        // Opens without asking anything of the network.
        let store = open_store(KmsConfig {
            region: Some("eu-west-1".into()),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            ..base
        })
        .unwrap();
        assert_eq!(store.name(), AWS_KMS);
    }
}
