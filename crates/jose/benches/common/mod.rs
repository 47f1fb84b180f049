//! The verification cases both benches measure: one realistic RFC 9068 access
//! token per algorithm, and the three ways to check it.
//!
//! - `raw`: aws-lc-rs verifying the token's signing input with a pre-parsed
//!   key and pre-decoded signature (the floor: no parsing, no claims);
//! - `keyward`: `verify_jwt` (split, header, kid lookup, signature, claims
//!   parse and full RFC 9068 policy validation). The same token is verified
//!   again and again, so after the first call its header is the key set's
//!   remembered one (no header decoding or kid lookup), as for every token
//!   after the first from one issuer key in service;
//! - `jsonwebtoken`: `jsonwebtoken::decode::<serde_json::Value>` with the
//!   same key, issuer and audience checks on.
//!
//! ML-DSA (FIPS 204, RFC 9964) has no jsonwebtoken support, so its cases
//! ([`PqCase`], [`PQ_NAMES`]) compare keyward with raw aws-lc-rs only, for
//! verification and for signing:
//!
//! - `raw_sign`: aws-lc-rs `PqdsaKeyPair::sign` of the token's signing input
//!   into a buffer on the stack (the floor: no JSON, no base64);
//! - `keyward_sign`: `sign_payload` of the claims bytes: the header JSON,
//!   both base64url segments, the signature through `LocalSigner`, and the
//!   signature's base64url: a whole compact token.
//!
//! Keys are generated at start-up and never written anywhere.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    self as sig, ParsedPublicKey, PqdsaKeyPair, PqdsaSigningAlgorithm, VerificationAlgorithm,
};
use keyward_jose::{
    sign_jwt, sign_payload, Algorithm, KeySet, LocalSigner, PrivateKey, PublicMaterial,
    TokenSigner, Validation,
};
use serde_json::json;
use std::hint::black_box;

const ISS: &str = "https://auth.example.com/envs/prod";
const AUD: &str = "https://api.example.com";
/// 2100-01-01: valid for keyward's `now` and for jsonwebtoken's wall clock.
const EXP: i64 = 4_102_444_800;

/// The names of the cases, in order.
pub const NAMES: [&str; 4] = ["RS256-2048", "RS256-4096", "ES256", "EdDSA"];
/// The names of the ML-DSA cases, in order.
pub const PQ_NAMES: [&str; 3] = ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"];

/// The claims of every case's token: a realistic RFC 9068 access token.
fn claims(now: i64) -> serde_json::Value {
    json!({
        "iss": ISS,
        "sub": "user_2f9c1e7a4b",
        "aud": AUD,
        "exp": EXP,
        "iat": now - 30,
        "nbf": now - 30,
        "jti": "0b6e0f3a-5c1d-4b8e-9a72-3f1d2c4e5a6b",
        "client_id": "billing-dashboard",
        "scope": "openid profile orders:read invoices:read",
        "permissions": ["orders.*.read", "invoices.42.read", "customers.self.write"],
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// One token and its key, ready for the two verifiers every case has: raw
/// aws-lc-rs and keyward.
pub struct Verifying {
    token: String,
    now: i64,
    keys: KeySet,
    policy: Validation,
    raw_key: ParsedPublicKey,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl Verifying {
    /// The token of `signer` at `now`, a key set of its public key, the
    /// RFC 9068 policy accepting `algorithms`, and the raw key for
    /// `raw_alg`; both verifiers checked once.
    fn new(
        signer: &LocalSigner,
        raw_alg: &'static dyn VerificationAlgorithm,
        algorithms: &[Algorithm],
        now: i64,
    ) -> Verifying {
        let token = sign_jwt(signer, Some("at+jwt"), &claims(now)).expect("signing");
        let jwk = signer.public_jwk();
        let mut keys = KeySet::new();
        keys.insert(jwk.kid.clone(), jwk.key.clone()).unwrap();
        let policy = Validation {
            algorithms: algorithms.to_vec(),
            ..Validation::access_token(ISS, &[AUD])
        };
        let ok = keyward_jose::verify_jwt(&token, &keys, &policy, now).expect("keyward verifies");
        assert_eq!(ok.claims.sub(), Some("user_2f9c1e7a4b"));
        // raw: pre-parsed key, pre-decoded signature, the exact signing input.
        let raw_key = ParsedPublicKey::new(raw_alg, jwk.key.to_spki_der()).expect("SPKI");
        let dot = token.rfind('.').unwrap();
        let signing_input = token.as_bytes()[..dot].to_vec();
        let signature = B64.decode(&token[dot + 1..]).unwrap();
        let v = Verifying {
            token,
            now,
            keys,
            policy,
            raw_key,
            signing_input,
            signature,
        };
        v.raw();
        v
    }

    /// One raw aws-lc-rs verification.
    #[inline(never)]
    pub fn raw(&self) {
        self.raw_key
            .verify_sig(black_box(&self.signing_input), black_box(&self.signature))
            .unwrap()
    }

    /// One keyward verification and validation.
    #[inline(never)]
    pub fn keyward(&self) {
        let ok = keyward_jose::verify_jwt(
            black_box(&self.token),
            &self.keys,
            &self.policy,
            black_box(self.now),
        )
        .unwrap();
        black_box(ok);
    }
}

/// One algorithm's token, prepared for the three verifiers.
pub struct Case {
    pub name: &'static str,
    /// The `raw` and `keyward` verifiers.
    pub v: Verifying,
    dk: jsonwebtoken::DecodingKey,
    jv: jsonwebtoken::Validation,
}

impl Case {
    /// Generates a key, signs the token, and checks every verifier accepts it.
    pub fn new(name: &'static str) -> Case {
        let (alg, bits, raw_alg, jwt_alg): (_, _, &'static dyn VerificationAlgorithm, _) =
            match name {
                "RS256-2048" => (
                    Algorithm::RS256,
                    Some(2048),
                    &sig::RSA_PKCS1_2048_8192_SHA256,
                    jsonwebtoken::Algorithm::RS256,
                ),
                "RS256-4096" => (
                    Algorithm::RS256,
                    Some(4096),
                    &sig::RSA_PKCS1_2048_8192_SHA256,
                    jsonwebtoken::Algorithm::RS256,
                ),
                "ES256" => (
                    Algorithm::ES256,
                    None,
                    &sig::ECDSA_P256_SHA256_FIXED,
                    jsonwebtoken::Algorithm::ES256,
                ),
                "EdDSA" => (
                    Algorithm::EdDSA,
                    None,
                    &sig::ED25519,
                    jsonwebtoken::Algorithm::EdDSA,
                ),
                other => panic!("no case {other}"),
            };
        let now = unix_now();
        let key = PrivateKey::generate(alg, bits).expect("key generation");
        let signer = LocalSigner::new(key, Some(format!("{name}-2026-01")));
        let v = Verifying::new(&signer, raw_alg, &Algorithm::DEFAULT_ACCEPTED, now);
        let public = signer.public_jwk().key;

        // jsonwebtoken: the same key from our JWK's base64url members.
        let dk = match public.material() {
            PublicMaterial::Rsa { n, e } => {
                jsonwebtoken::DecodingKey::from_rsa_components(&B64.encode(n), &B64.encode(e))
            }
            PublicMaterial::Ec { x, y, .. } => {
                jsonwebtoken::DecodingKey::from_ec_components(&B64.encode(x), &B64.encode(y))
            }
            PublicMaterial::Ed25519 { x } => {
                jsonwebtoken::DecodingKey::from_ed_components(&B64.encode(x))
            }
            PublicMaterial::MlDsa { .. } => unreachable!("the cases are RS256, ES256 and EdDSA"),
        }
        .expect("jsonwebtoken key");
        let mut jv = jsonwebtoken::Validation::new(jwt_alg);
        jv.set_audience(&[AUD]);
        jv.set_issuer(&[ISS]);
        jv.validate_nbf = true;
        jv.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);

        let case = Case { name, v, dk, jv };
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&case.v.token, &case.dk, &case.jv);
        assert!(
            decoded.is_ok(),
            "jsonwebtoken must accept the token: {decoded:?}"
        );
        case
    }

    /// One jsonwebtoken verification and validation.
    #[inline(never)]
    pub fn jsonwebtoken(&self) {
        let ok =
            jsonwebtoken::decode::<serde_json::Value>(black_box(&self.v.token), &self.dk, &self.jv)
                .unwrap();
        black_box(ok);
    }
}

/// One ML-DSA parameter set's token and key, prepared for raw aws-lc-rs and
/// keyward, verifying and signing.
pub struct PqCase {
    pub name: &'static str,
    /// The `raw` and `keyward` verifiers.
    pub v: Verifying,
    /// The same key twice: aws-lc-rs's own, and keyward's signer.
    raw_pair: PqdsaKeyPair,
    signer: LocalSigner,
    /// The claims bytes `keyward_sign` signs (those of `token`).
    payload: Vec<u8>,
}

impl PqCase {
    /// Makes a key from a random seed (once for aws-lc-rs, once for
    /// keyward), signs the token, and checks both verify it.
    pub fn new(name: &'static str) -> PqCase {
        let (alg, signing, raw_alg): (
            _,
            &'static PqdsaSigningAlgorithm,
            &'static dyn VerificationAlgorithm,
        ) = match name {
            "ML-DSA-44" => (Algorithm::MlDsa44, &sig::ML_DSA_44_SIGNING, &sig::ML_DSA_44),
            "ML-DSA-65" => (Algorithm::MlDsa65, &sig::ML_DSA_65_SIGNING, &sig::ML_DSA_65),
            "ML-DSA-87" => (Algorithm::MlDsa87, &sig::ML_DSA_87_SIGNING, &sig::ML_DSA_87),
            other => panic!("no case {other}"),
        };
        let seed = keyward_jose::crypto::random_bytes::<32>();
        let raw_pair = PqdsaKeyPair::from_seed(signing, &seed).expect("seed");
        let key = PrivateKey::from_seed(alg, &seed).expect("seed");
        let signer = LocalSigner::new(key, Some(format!("{name}-2026-01")));
        let now = unix_now();
        // A gate that lists every algorithm, ML-DSA last.
        let v = Verifying::new(&signer, raw_alg, &Algorithm::ALL, now);
        let payload = serde_json::to_vec(&claims(now)).unwrap();
        let case = PqCase {
            name,
            v,
            raw_pair,
            signer,
            payload,
        };
        case.raw_sign();
        let t = case.keyward_sign();
        let v = &case.v;
        assert_eq!(t.len(), v.token.len(), "same header and claims");
        keyward_jose::verify_jwt(&t, &v.keys, &v.policy, now).expect("keyward signs");
        case
    }

    /// One raw aws-lc-rs signature of the signing input.
    #[inline(never)]
    pub fn raw_sign(&self) {
        let mut out = [0u8; 4627];
        let n = self
            .raw_pair
            .sign(black_box(&self.v.signing_input), &mut out)
            .unwrap();
        black_box(&out[..n]);
    }

    /// One keyward compact token: header, payload, signature, base64url.
    #[inline(never)]
    pub fn keyward_sign(&self) -> String {
        black_box(sign_payload(&self.signer, Some("at+jwt"), black_box(&self.payload)).unwrap())
    }
}

/// The clock both benches read, in ns: this thread's CPU time on Linux
/// (`CLOCK_THREAD_CPUTIME_ID`), wall time elsewhere or with
/// `KEYWARD_BENCH_WALL=1`. The work is single-threaded and CPU-bound, and on
/// a shared machine wall time also counts the slices other processes run in.
pub fn now_ns() -> u64 {
    static WALL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let wall = *WALL.get_or_init(|| std::env::var_os("KEYWARD_BENCH_WALL").is_some());
    #[cfg(target_os = "linux")]
    if !wall {
        use rustix::time::{clock_gettime, ClockId};
        let t = clock_gettime(ClockId::ThreadCPUTime);
        return t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    }
    let _ = wall;
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}
