//! The AWS KMS store against moto's KMS server on 127.0.0.1, through the
//! real SDK (`endpoint_url`), credentials from the standard chain (set in
//! this process's environment to test values).
//!
//! moto runs from `tests/moto_kms.py`, which mends two places where moto's
//! `Sign` departs from the AWS API (DIGEST messages, the PSS salt); one test
//! runs moto unchanged to show that keyward refuses what it signs.
//!
//! Without python3 and moto these tests print `SKIPPED: ...` and pass,
//! unless KEYWARD_REQUIRE_DEVICES=1, where they fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeyState, KeyUsageType, OriginType};
use keyward_jose::{Algorithm, KeyError, PublicKey, SealError};
use keyward_signers::kms::{open_store, KmsConfig};
use keyward_signers::{KeyStore, SignerError, AWS_KMS};

// ---------------------------------------------------------------- moto

/// Test credentials for the standard chain, set once before any client
/// exists; the host's AWS files and instance metadata are kept out.
fn test_environment() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "AKIDKEYWARDTEST"),
            ("AWS_SECRET_ACCESS_KEY", "keyward-test-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/keyward-test/config"),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/keyward-test/credentials",
            ),
        ] {
            std::env::set_var(k, v);
        }
        for k in [
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_KMS",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
        ] {
            std::env::remove_var(k);
        }
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A moto server; killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(plain: bool) -> Result<Moto, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto_kms.py");
        let probe = Command::new("python3")
            .args(["-c", "import moto.server, moto.kms, cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match probe {
            Ok(s) if s.success() => {}
            Ok(_) => {
                return Err(
                    "python3 cannot import moto[server] (pip install 'moto[server]==5.2.1')".into(),
                )
            }
            Err(e) => return Err(format!("no python3: {e}")),
        }
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if plain {
            cmd.env("KEYWARD_MOTO_PLAIN", "1");
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start moto: {e}"))?;
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!("moto exited at start ({status})"));
            }
            if http_ok(port) {
                return Ok(moto);
            }
            if Instant::now() > deadline {
                return Err("moto did not answer within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something answers HTTP on the port.
fn http_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.")
}

fn require(why: String) {
    if std::env::var("KEYWARD_REQUIRE_DEVICES").as_deref() == Ok("1") {
        panic!("KEYWARD_REQUIRE_DEVICES=1 and the KMS test server is missing: {why}");
    }
    println!("SKIPPED: {why}");
}

/// One moto shared by the tests running at the same time (each in its own
/// region: moto keeps keys per region); it stops when the last lets go.
fn shared_moto() -> Option<Arc<Moto>> {
    test_environment();
    static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = slot.upgrade() {
        return Some(m);
    }
    match Moto::start(false) {
        Ok(m) => {
            let m = Arc::new(m);
            *slot = Arc::downgrade(&m);
            Some(m)
        }
        Err(why) => {
            require(why);
            None
        }
    }
}

fn own_moto(plain: bool) -> Option<Moto> {
    test_environment();
    match Moto::start(plain) {
        Ok(m) => Some(m),
        Err(why) => {
            require(why);
            None
        }
    }
}

macro_rules! moto {
    () => {
        match shared_moto() {
            Some(m) => m,
            None => return,
        }
    };
}

fn store_at(url: &str, region: &str, call_timeout: Duration) -> Arc<dyn KeyStore> {
    open_store(KmsConfig {
        region: Some(region.into()),
        endpoint_url: Some(url.into()),
        call_timeout,
        ..KmsConfig::default()
    })
    .expect("store opens")
}

/// An SDK client of its own, to look at what the store did.
struct Admin {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_kms::Client,
}

impl Admin {
    fn new(url: &str, region: &str) -> Admin {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conf = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region.to_string()))
                .endpoint_url(url)
                .load(),
        );
        Admin {
            rt,
            client: aws_sdk_kms::Client::new(&conf),
        }
    }

    fn keys(&self) -> Vec<String> {
        let mut arns = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .rt
                .block_on(self.client.list_keys().set_marker(marker).send())
                .unwrap();
            arns.extend(
                out.keys()
                    .iter()
                    .filter_map(|k| k.key_arn().map(String::from)),
            );
            if !out.truncated() {
                break;
            }
            marker = out.next_marker().map(String::from);
        }
        arns.sort();
        arns
    }

    fn describe(&self, key: &str) -> aws_sdk_kms::types::KeyMetadata {
        self.rt
            .block_on(self.client.describe_key().key_id(key).send())
            .unwrap()
            .key_metadata
            .unwrap()
    }

    fn public_der(&self, arn: &str) -> Vec<u8> {
        self.rt
            .block_on(self.client.get_public_key().key_id(arn).send())
            .unwrap()
            .public_key
            .unwrap()
            .into_inner()
    }
}

// ---------------------------------------------------------------- proxy

/// What the proxy does with the requests it is told to disturb.
#[derive(Clone, Debug)]
enum Fault {
    Pass,
    /// Answers this status and JSON body.
    Answer(u16, &'static str),
    /// Never answers.
    Hang,
}

struct ProxyState {
    /// Only requests whose `X-Amz-Target` ends with this (`.Sign`), or all.
    target: Option<&'static str>,
    fault: Fault,
}

/// A fault-injecting HTTP proxy on 127.0.0.1 in front of moto: one request
/// per connection, passed on, answered, or left hanging.
struct Proxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
    /// Requests that matched the target so far.
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(ProxyState {
            target: None,
            fault: Fault::Pass,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, h, sp) = (state.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (st, h, sp) = (st.clone(), h.clone(), sp.clone());
                        std::thread::spawn(move || serve(conn, upstream, &st, &h, &sp));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            state,
            hits,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, target: Option<&'static str>, fault: Fault) {
        let mut s = self.state.lock().unwrap();
        s.target = target;
        s.fault = fault;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    conn: TcpStream,
    upstream: u16,
    state: &Mutex<ProxyState>,
    hits: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    // The request: head lines, then Content-Length bytes.
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut target = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("x-amz-target:") {
            target = line["x-amz-target:".len()..].trim().to_string();
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let fault = {
        let s = state.lock().unwrap();
        match s.target {
            Some(t) if !target.ends_with(t) => Fault::Pass,
            _ => {
                if !matches!(s.fault, Fault::Pass) {
                    hits.fetch_add(1, Ordering::SeqCst);
                }
                s.fault.clone()
            }
        }
    };
    let mut conn = conn;
    match fault {
        Fault::Pass => {
            let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return; // moto is gone: the client sees the connection close
            };
            let _ = up.set_read_timeout(Some(Duration::from_secs(30)));
            if up
                .write_all(&head)
                .and_then(|_| up.write_all(&body))
                .is_err()
            {
                return;
            }
            let mut answer = Vec::new();
            let _ = up.read_to_end(&mut answer);
            let _ = conn.write_all(&answer);
        }
        Fault::Answer(status, json) => {
            let _ = write!(
                conn,
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: injected-0001\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
        }
        Fault::Hang => {
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = conn.flush();
}

// ---------------------------------------------------------------- helpers

fn sign_and_verify(store: &dyn KeyStore, kid: &str, reference: &str, public: &PublicKey) {
    let signer = keyward_signers::open(store, kid, reference, public).expect("opens");
    assert_eq!(signer.store(), AWS_KMS);
    assert_eq!(signer.cost(), keyward_jose::SigningCost::Waits);
    assert_eq!(signer.kid(), kid);
    // A JWT, verified by keyward-jose with the recorded public key.
    let token = keyward_jose::sign_jwt(
        &*signer,
        Some("at+jwt"),
        &serde_json::json!({"iss": "https://issuer.test", "sub": kid}),
    )
    .expect("signs");
    let (header, payload) =
        keyward_jose::verify_compact(&token, public, keyward_jose::DEFAULT_MAX_TOKEN_LEN)
            .expect("the token verifies");
    assert_eq!(header.alg, public.algorithm());
    assert!(String::from_utf8(payload).unwrap().contains(kid));
    // A signing input beyond the 4 KiB a RAW KMS message may have.
    let big = vec![b'a'; 10_000];
    let sig = signer.sign(&big).expect("signs 10 KB");
    public.verify(&big, &sig).expect("verifies");
}

fn reason_of(e: &KeyError) -> &'static str {
    match e {
        KeyError::Unavailable { reason, .. } => reason,
        _ => "other",
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn every_supported_algorithm_generates_signs_and_verifies() {
    let moto = moto!();
    let region = "eu-west-1";
    let store = store_at(&moto.url(), region, Duration::from_secs(30));
    let admin = Admin::new(&moto.url(), region);
    let cases: &[(Algorithm, Option<u32>, &str)] = &[
        (Algorithm::ES256, None, "ECC_NIST_P256"),
        (Algorithm::ES384, None, "ECC_NIST_P384"),
        (Algorithm::ES512, None, "ECC_NIST_P521"),
        (Algorithm::RS256, Some(2048), "RSA_2048"),
        (Algorithm::RS384, Some(3072), "RSA_3072"),
        (Algorithm::RS512, None, "RSA_4096"),
        (Algorithm::PS256, Some(2048), "RSA_2048"),
        (Algorithm::PS384, Some(2048), "RSA_2048"),
        (Algorithm::PS512, Some(2048), "RSA_2048"),
    ];
    for (alg, bits, spec) in cases {
        store.check_algorithm(*alg, *bits).unwrap();
        let kid = format!("kid-{}", alg.name());
        let key = store.generate(&kid, *alg, *bits).expect("generates");
        assert!(
            key.reference.starts_with(&format!("arn:aws:kms:{region}:")),
            "{}",
            key.reference
        );
        assert_eq!(key.public.algorithm(), *alg);
        // What KMS made: a signing key, generated inside KMS, named by kid.
        let meta = admin.describe(&key.reference);
        assert_eq!(meta.key_usage(), Some(&KeyUsageType::SignVerify));
        assert_eq!(meta.key_spec().map(|s| s.as_str()), Some(*spec));
        assert_eq!(meta.origin(), Some(&OriginType::AwsKms));
        assert_eq!(
            meta.description(),
            Some(format!("keyward signing key {kid}").as_str())
        );
        // All that is kept of it is public: its ARN and the SubjectPublicKeyInfo
        // GetPublicKey returns (KMS has no call that returns its private half).
        assert_eq!(key.public.to_spki_der(), admin.public_der(&key.reference));
        let kept = format!("{} {:?} {}", key.reference, key, key.public.to_pem());
        assert!(!kept.contains("PRIVATE"), "{kept}");
        sign_and_verify(&*store, &kid, &key.reference, &key.public);
    }
    // The tag names the kid.
    let arn = store
        .generate("tagged-kid", Algorithm::ES256, None)
        .unwrap()
        .reference;
    let tags = admin
        .rt
        .block_on(admin.client.list_resource_tags().key_id(&arn).send())
        .unwrap();
    assert!(tags
        .tags()
        .iter()
        .any(|t| t.tag_key() == "keyward:kid" && t.tag_value() == "tagged-kid"));
}

#[test]
fn unsupported_algorithms_and_bad_input_are_refused_with_nothing_created() {
    let moto = moto!();
    let region = "eu-west-2";
    let store = store_at(&moto.url(), region, Duration::from_secs(10));
    let admin = Admin::new(&moto.url(), region);
    store.generate("first", Algorithm::ES256, None).unwrap();
    let before = admin.keys();
    for alg in [
        Algorithm::EdDSA,
        Algorithm::MlDsa44,
        Algorithm::MlDsa65,
        Algorithm::MlDsa87,
    ] {
        let e = store.check_algorithm(alg, None).unwrap_err();
        assert!(matches!(e, SignerError::Unsupported { .. }), "{e}");
        let e = store.generate("k", alg, None).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, SignerError::Unsupported { store: AWS_KMS, .. })
                && text.contains("aws-kms")
                && text.contains(alg.name())
                && text.contains("not tested"),
            "{text}"
        );
    }
    for (alg, bits) in [
        (Algorithm::RS256, Some(1024)),
        (Algorithm::RS256, Some(8192)),
        (Algorithm::ES256, Some(2048)),
    ] {
        assert!(store.generate("k", alg, bits).is_err(), "{alg} {bits:?}");
    }
    for kid in ["", "a<b>", "new\nline", &"x".repeat(300)] {
        let e = store.generate(kid, Algorithm::ES256, None).unwrap_err();
        assert!(matches!(e, SignerError::Key(KeyError::Malformed(_))), "{e}");
    }
    assert_eq!(admin.keys(), before, "nothing was created");
}

#[test]
fn open_refuses_another_key_a_missing_key_and_a_non_arn() {
    let moto = moto!();
    let region = "eu-west-3";
    let store = store_at(&moto.url(), region, Duration::from_secs(10));
    let a = store.generate("a", Algorithm::ES256, None).unwrap();
    let b = store.generate("b", Algorithm::ES256, None).unwrap();
    let e = keyward_signers::open(&*store, "a", &a.reference, &b.public)
        .err()
        .unwrap();
    assert!(matches!(e, SignerError::Mismatch { .. }), "{e}");
    // Same key, recorded as another algorithm's key.
    let r = store.generate("r", Algorithm::RS256, Some(2048)).unwrap();
    let as_ps = PublicKey::from_der(Algorithm::PS256, &r.public.to_spki_der()).unwrap();
    assert!(
        keyward_signers::open(&*store, "r", &r.reference, &as_ps).is_ok(),
        "an RSA key signs PS256 too"
    );
    let as_es384 = store.generate("c", Algorithm::ES384, None).unwrap();
    let e = keyward_signers::open(&*store, "a", &a.reference, &as_es384.public)
        .err()
        .unwrap();
    assert!(matches!(e, SignerError::Mismatch { .. }), "{e}");
    let missing = a.reference.rsplit_once('/').unwrap().0.to_string()
        + "/00000000-0000-0000-0000-000000000000";
    let e = keyward_signers::open(&*store, "a", &missing, &a.public)
        .err()
        .unwrap();
    assert!(
        matches!(e, SignerError::NotFound { store: AWS_KMS, .. }),
        "{e}"
    );
    for bad in ["alias/keyward", "", "not-an-arn"] {
        let e = keyward_signers::open(&*store, "a", bad, &a.public)
            .err()
            .unwrap();
        assert!(matches!(e, SignerError::Mismatch { .. }), "{bad}: {e}");
    }
}

#[test]
fn destroy_schedules_deletion_once_and_spares_other_keys() {
    let moto = moto!();
    let region = "eu-central-1";
    let store = store_at(&moto.url(), region, Duration::from_secs(10));
    let admin = Admin::new(&moto.url(), region);
    let key = store.generate("doomed", Algorithm::ES256, None).unwrap();
    store.destroy(&key.reference).unwrap();
    let meta = admin.describe(&key.reference);
    assert_eq!(meta.key_state(), Some(&KeyState::PendingDeletion));
    assert!(meta.deletion_date().is_some());
    store
        .destroy(&key.reference)
        .expect("a second destroy is Ok");
    // A key KMS does not know: already gone.
    let gone = key.reference.rsplit_once('/').unwrap().0.to_string()
        + "/00000000-0000-0000-0000-000000000000";
    store.destroy(&gone).unwrap();
    // Not a signing key (a root key): refused, left as it was.
    let root = store.root_key("alias/not-a-signing-key", true).unwrap();
    let root_arn = root
        .reference()
        .strip_prefix("aws-kms:")
        .unwrap()
        .to_string();
    let e = store.destroy(&root_arn).unwrap_err();
    assert!(matches!(e, SignerError::Mismatch { .. }), "{e}");
    assert_eq!(
        admin.describe(&root_arn).key_state(),
        Some(&KeyState::Enabled)
    );
    let e = store.destroy("alias/not-a-signing-key").unwrap_err();
    assert!(matches!(e, SignerError::Mismatch { .. }), "{e}");
    assert_eq!(
        admin.describe(&root_arn).key_state(),
        Some(&KeyState::Enabled)
    );
}

#[test]
fn root_key_create_alias_round_trip_and_refusals() {
    let moto = moto!();
    let region = "ap-south-1";
    let store = store_at(&moto.url(), region, Duration::from_secs(10));
    let admin = Admin::new(&moto.url(), region);
    let name = "alias/keyward-root";
    let before = admin.keys();
    let e = store.root_key(name, false).err().unwrap();
    assert!(matches!(e, SignerError::NotFound { .. }), "{e}");
    assert_eq!(admin.keys(), before, "nothing made without create");
    let root = store.root_key(name, true).unwrap();
    let arn = root
        .reference()
        .strip_prefix("aws-kms:")
        .unwrap()
        .to_string();
    let meta = admin.describe(name);
    assert_eq!(
        meta.arn(),
        Some(arn.as_str()),
        "the alias names the new key"
    );
    assert_eq!(meta.key_usage(), Some(&KeyUsageType::EncryptDecrypt));
    assert_eq!(root.store(), AWS_KMS);
    let expected = {
        let h = keyward_jose::crypto::sha256_parts(&[
            b"keyward-root-key-id-v1\0aws-kms\0",
            arn.as_bytes(),
        ]);
        keyward_jose::crypto::hex(&h[..8])
    };
    assert_eq!(root.key_id(), expected);
    // The same key by alias (no second key), ARN and key id.
    let after = admin.keys();
    assert_eq!(after.len(), before.len() + 1);
    for other_name in [name.to_string(), arn.clone(), meta.key_id().to_string()] {
        let again = store.root_key(&other_name, true).unwrap();
        assert_eq!(again.key_id(), root.key_id());
        assert_eq!(again.reference(), root.reference());
    }
    assert_eq!(admin.keys(), after);

    let data_key = [7u8; 32];
    let aad = b"env=prod\0kid=k1";
    let wrapped = root.wrap(aad, &data_key).unwrap();
    assert!(
        !wrapped.windows(32).any(|w| w == data_key),
        "the data key is not in the clear"
    );
    assert_eq!(&root.unwrap(aad, &wrapped).unwrap()[..], &data_key);
    assert!(matches!(
        root.unwrap(b"env=dev\0kid=k1", &wrapped),
        Err(SealError::OpenFailed)
    ));
    assert!(matches!(
        root.unwrap(b"", &wrapped),
        Err(SealError::OpenFailed)
    ));
    for i in [wrapped.len() / 2, wrapped.len() - 1, 0] {
        let mut altered = wrapped.clone();
        altered[i] ^= 1;
        let r = root.unwrap(aad, &altered);
        assert!(matches!(r, Err(SealError::OpenFailed)), "byte {i}: {r:?}");
    }
    assert!(matches!(root.unwrap(aad, &[]), Err(SealError::OpenFailed)));
    assert!(matches!(
        root.unwrap(aad, &wrapped[..10]),
        Err(SealError::OpenFailed)
    ));

    // Another KMS key: another key id, and it opens nothing of the first.
    let other = store.root_key("alias/keyward-other-root", true).unwrap();
    assert_ne!(other.key_id(), root.key_id());
    assert!(matches!(
        other.unwrap(aad, &wrapped),
        Err(SealError::OpenFailed)
    ));
    let theirs = other.wrap(aad, &data_key).unwrap();
    assert!(matches!(
        root.unwrap(aad, &theirs),
        Err(SealError::OpenFailed)
    ));

    // Refused: a signing key, a bad name, a key id KMS cannot be told to make.
    let signing = store.generate("s", Algorithm::ES256, None).unwrap();
    let count = admin.keys().len();
    let e = store.root_key(&signing.reference, true).err().unwrap();
    assert!(
        matches!(e, SignerError::Config { .. }) && e.to_string().contains("ENCRYPT_DECRYPT"),
        "{e}"
    );
    for bad in ["", "alias/", "not a key", "alias/aws/ebs"] {
        let e = store.root_key(bad, true).err().unwrap();
        assert!(matches!(e, SignerError::Config { .. }), "{bad:?}: {e}");
    }
    let e = store
        .root_key("11111111-2222-3333-4444-555555555555", true)
        .err()
        .unwrap();
    assert!(
        matches!(e, SignerError::Config { .. }) && e.to_string().contains("alias"),
        "{e}"
    );
    assert_eq!(admin.keys().len(), count, "nothing made by refused calls");
}

#[test]
fn concurrent_signing_from_eight_threads() {
    let moto = moto!();
    let store = store_at(&moto.url(), "ap-northeast-1", Duration::from_secs(30));
    let key = store.generate("busy", Algorithm::ES256, None).unwrap();
    let signer = keyward_signers::open(&*store, "busy", &key.reference, &key.public).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (signer, public) = (signer.clone(), key.public.clone());
            std::thread::spawn(move || {
                for i in 0..10 {
                    let input = format!("thread {t} message {i}");
                    let sig = signer.sign(input.as_bytes()).expect("signs");
                    public.verify(input.as_bytes(), &sig).expect("verifies");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no thread failed");
    }
}

#[test]
fn a_kms_that_signs_the_wrong_thing_makes_no_token() {
    // moto unchanged hashes a DIGEST message again: its signature is over
    // H(H(m)). Checked refuses it.
    let Some(moto) = own_moto(true) else { return };
    let store = store_at(&moto.url(), "us-east-1", Duration::from_secs(10));
    let key = store.generate("plain", Algorithm::ES256, None).unwrap();
    let signer = keyward_signers::open(&*store, "plain", &key.reference, &key.public).unwrap();
    let e = signer.sign(b"header.payload").unwrap_err();
    assert_eq!(reason_of(&e), "bad_signature", "{e}");
    let e = keyward_jose::sign_jwt(&*signer, None, &serde_json::json!({"sub": "x"})).unwrap_err();
    assert!(
        e.to_string().contains("bad_signature") || e.to_string().contains("does not verify"),
        "{e}"
    );
}

#[test]
fn unreachable_kms_fails_in_bounded_time_and_a_server_starts_without_it() {
    test_environment();
    // Nothing listens: open_store does not ask the network; calls fail fast.
    let port = free_port();
    let started = Instant::now();
    let store = store_at(
        &format!("http://127.0.0.1:{port}"),
        "us-west-1",
        Duration::from_secs(3),
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    let started = Instant::now();
    let e = store.check().unwrap_err();
    assert_eq!(e.reason(), "unreachable", "{e}");
    assert!(e.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // moto stops under a signer.
    let Some(moto) = own_moto(false) else { return };
    let store = store_at(&moto.url(), "us-west-1", Duration::from_secs(3));
    let key = store.generate("k", Algorithm::ES256, None).unwrap();
    let signer = keyward_signers::open(&*store, "k", &key.reference, &key.public).unwrap();
    signer.sign(b"before").unwrap();
    drop(moto);
    let started = Instant::now();
    let e = signer.sign(b"after").unwrap_err();
    assert_eq!(reason_of(&e), "unreachable", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

fn proxied(moto: &Moto, region: &str, call_timeout: Duration) -> (Proxy, Arc<dyn KeyStore>) {
    let proxy = Proxy::start(moto.port);
    let store = open_store(KmsConfig {
        region: Some(region.into()),
        endpoint_url: Some(proxy.url()),
        call_timeout,
        backoff_min: Duration::from_millis(400),
        backoff_max: Duration::from_secs(2),
    })
    .unwrap();
    (proxy, store)
}

#[test]
fn throttling_server_errors_and_silence_have_their_reasons_and_bounds() {
    let moto = moto!();
    let call_timeout = Duration::from_secs(2);
    let (proxy, store) = proxied(&moto, "us-west-2", call_timeout);
    let key = store.generate("k", Algorithm::ES256, None).unwrap();
    let signer = keyward_signers::open(&*store, "k", &key.reference, &key.public).unwrap();
    signer.sign(b"ok").unwrap();

    let cases: &[(Fault, &str)] = &[
        (
            Fault::Answer(
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            ),
            "throttled",
        ),
        (
            Fault::Answer(429, r#"{"__type":"TooManyRequests"}"#),
            "throttled",
        ),
        (
            Fault::Answer(500, r#"{"__type":"KMSInternalException"}"#),
            "server",
        ),
        (Fault::Answer(503, "{}"), "server"),
        (Fault::Hang, "timeout"),
    ];
    for (fault, reason) in cases {
        proxy.set(Some(".Sign"), fault.clone());
        let hits = proxy.hits();
        let started = Instant::now();
        let e = signer.sign(b"disturbed").unwrap_err();
        let took = started.elapsed();
        assert_eq!(reason_of(&e), *reason, "{fault:?}: {e}");
        assert!(
            took < call_timeout + Duration::from_millis(700),
            "{fault:?} took {took:?}"
        );
        if matches!(fault, Fault::Hang) {
            assert!(
                took >= call_timeout - Duration::from_millis(100),
                "{took:?}"
            );
        }
        assert!(proxy.hits() > hits, "the request reached the proxy");
        // Backing off: the next call fails at once with the same reason,
        // without a request.
        let hits = proxy.hits();
        let started = Instant::now();
        let e = signer.sign(b"again").unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(reason_of(&e), *reason, "{e}");
        assert!(e.to_string().contains("next try in"), "{e}");
        assert_eq!(proxy.hits(), hits, "not tried while backing off");
        // Mended, and the wait over: works again, and the backoff is reset.
        proxy.set(None, Fault::Pass);
        std::thread::sleep(Duration::from_millis(2100));
        signer.sign(b"mended").expect("works once the wait is over");
    }
    // After the reset, one failure waits the shortest time again.
    proxy.set(Some(".Sign"), Fault::Answer(500, "{}"));
    signer.sign(b"x").unwrap_err();
    let e = signer.sign(b"y").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("1 failure(s) in a row"), "{text}");
    let ms: u64 = text
        .rsplit("next try in ")
        .next()
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(ms <= 400, "{text}");
}

#[test]
fn disabled_denied_and_failed_steps_are_reported_and_cleaned_up() {
    let moto = moto!();
    let region = "ca-central-1";
    let (proxy, store) = proxied(&moto, region, Duration::from_secs(10));
    let admin = Admin::new(&moto.url(), region);
    let key = store.generate("k", Algorithm::ES256, None).unwrap();
    let signer = keyward_signers::open(&*store, "k", &key.reference, &key.public).unwrap();

    // A disabled key: its own reason, and no backoff (KMS is up).
    proxy.set(
        Some(".Sign"),
        Fault::Answer(
            400,
            r#"{"__type":"KMSInvalidStateException","message":"arn is disabled."}"#,
        ),
    );
    let e = signer.sign(b"x").unwrap_err();
    assert_eq!(reason_of(&e), "disabled", "{e}");
    let hits = proxy.hits();
    signer.sign(b"x").unwrap_err();
    assert_eq!(proxy.hits(), hits + 1, "tried again at once: not an outage");

    // Access denied: a configuration error naming the IAM action.
    proxy.set(
        Some(".Sign"),
        Fault::Answer(400, r#"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::123456789012:user/keyward is not authorized to perform: kms:Sign"}"#),
    );
    let e = signer.sign(b"x").unwrap_err();
    assert_eq!(reason_of(&e), "config", "{e}");
    assert!(e.to_string().contains("kms:Sign"), "{e}");
    proxy.set(Some(".ListKeys"), Fault::Answer(400, r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#));
    let e = store.check().unwrap_err();
    assert!(
        matches!(e, SignerError::Config { .. }) && e.to_string().contains("kms:ListKeys"),
        "{e}"
    );
    assert!(!e.is_transient());

    // GetPublicKey fails after CreateKey: the new key is scheduled for
    // deletion, nothing usable is left.
    let before = admin.keys();
    proxy.set(
        Some(".GetPublicKey"),
        Fault::Answer(500, r#"{"__type":"KMSInternalException"}"#),
    );
    let e = store.generate("half", Algorithm::ES256, None).unwrap_err();
    assert_eq!(e.reason(), "server", "{e}");
    let after = admin.keys();
    let new: Vec<_> = after.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(new.len(), 1, "one key was made");
    assert_eq!(
        admin.describe(new[0]).key_state(),
        Some(&KeyState::PendingDeletion)
    );

    // AWS refuses to schedule a key already pending deletion; destroy
    // checks the state and is Ok. A key in another state is reported.
    proxy.set(None, Fault::Pass);
    std::thread::sleep(Duration::from_millis(450));
    let k2 = store.generate("k2", Algorithm::ES256, None).unwrap();
    proxy.set(
        Some(".ScheduleKeyDeletion"),
        Fault::Answer(
            400,
            r#"{"__type":"KMSInvalidStateException","message":"is pending deletion"}"#,
        ),
    );
    let e = store.destroy(&k2.reference).unwrap_err();
    assert_eq!(e.reason(), "disabled", "{e}");
    assert_eq!(
        admin.describe(&k2.reference).key_state(),
        Some(&KeyState::Enabled)
    );

    // Root keys: a throttled Decrypt is Unavailable, not OpenFailed.
    proxy.set(None, Fault::Pass);
    let root = store.root_key("alias/proxied-root", true).unwrap();
    let wrapped = root.wrap(b"aad", &[1u8; 32]).unwrap();
    proxy.set(
        Some(".Decrypt"),
        Fault::Answer(400, r#"{"__type":"ThrottlingException"}"#),
    );
    match root.unwrap(b"aad", &wrapped) {
        Err(SealError::Unavailable { store, reason, .. }) => {
            assert_eq!((store, reason), (AWS_KMS, "throttled"));
        }
        other => panic!("{other:?}"),
    }
    // Decrypt refused for every ciphertext, the probe's too: keyward lacks
    // kms:Decrypt, said so (not "wrong root key").
    proxy.set(
        Some(".Decrypt"),
        Fault::Answer(400, r#"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::123456789012:user/keyward is not authorized to perform: kms:Decrypt"}"#),
    );
    std::thread::sleep(Duration::from_millis(450));
    match root.unwrap(b"aad", &wrapped) {
        Err(SealError::Unavailable { reason, detail, .. }) => {
            assert_eq!(reason, "config");
            assert!(detail.contains("kms:Decrypt"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    proxy.set(None, Fault::Pass);
    assert_eq!(&root.unwrap(b"aad", &wrapped).unwrap()[..], &[1u8; 32]);
}

#[test]
#[ignore = "a latency figure, not a check: cargo test -p keyward-signers --test kms -- --ignored --nocapture sign_latency"]
fn sign_latency() {
    let moto = moto!();
    let store = store_at(&moto.url(), "sa-east-1", Duration::from_secs(30));
    for (alg, bits) in [(Algorithm::ES256, None), (Algorithm::RS256, Some(2048))] {
        let key = store.generate("lat", alg, bits).unwrap();
        let signer = keyward_signers::open(&*store, "lat", &key.reference, &key.public).unwrap();
        for _ in 0..20 {
            signer.sign(b"warm-up").unwrap();
        }
        let n = 300;
        let mut times: Vec<Duration> = (0..n)
            .map(|i| {
                let input = format!("eyJhbGciOiJFUzI1NiJ9.{i}");
                let t = Instant::now();
                signer.sign(input.as_bytes()).unwrap();
                t.elapsed()
            })
            .collect();
        times.sort();
        let mean = times.iter().sum::<Duration>() / n as u32;
        let p99 = times[(n * 99) / 100 - 1];
        println!(
            "{alg} sign through Checked against moto: mean {:.2} ms, p99 {:.2} ms ({n} calls, one thread)",
            mean.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

#[test]
fn missing_credentials_are_a_configuration_error() {
    // The standard chain reads this process's environment, which the other
    // tests fill: the check runs in a child process without credentials.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_without_credentials",
            "--ignored",
            "--nocapture",
        ])
        .env("KEYWARD_KMS_CHILD", "1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("child checked"), "the child ran: {text}");
}

#[test]
#[ignore = "run by missing_credentials_are_a_configuration_error in a child process"]
fn child_without_credentials() {
    if std::env::var("KEYWARD_KMS_CHILD").as_deref() != Ok("1") {
        return;
    }
    for (k, v) in [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/keyward-test/config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/keyward-test/credentials",
        ),
    ] {
        std::env::set_var(k, v);
    }
    for k in [
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ] {
        std::env::remove_var(k);
    }
    let store = store_at(
        &format!("http://127.0.0.1:{}", free_port()),
        "us-east-1",
        Duration::from_secs(5),
    );
    let started = Instant::now();
    let e = store.check().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(
        matches!(e, SignerError::Config { store: AWS_KMS, .. }),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("credentials") && text.contains("kms:ListKeys"),
        "{text}"
    );
    assert!(!e.is_transient());
    println!("child checked: {text}");
}
