//! Tokens, JWS, JWK/PEM conversion and key import through the CLI.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::{openssl, write, Kw};

fn sign(kw: &Kw, env: &str, claims: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "sign", "--env", env, "--claims", claims];
    args.extend_from_slice(extra);
    kw.run(&args).ok().stdout.trim().to_string()
}

/// `token verify` of `token` against `jwks` with init's issuer, audience
/// `api` and `typ: at+jwt`; its claims.
fn verify_ok(kw: &Kw, jwks: &str, token: &str) -> serde_json::Value {
    kw.run(&[
        "token",
        "verify",
        "--jwks",
        jwks,
        "--iss",
        "http://127.0.0.1:8080",
        "--aud",
        "api",
        "--typ",
        "at+jwt",
        token,
    ])
    .ok()
    .json()
}

#[test]
fn sign_verify_decode() {
    let kw = Kw::new();
    kw.init();
    let jwks = write(
        kw.dir.path(),
        "jwks.json",
        &kw.run(&["keys", "export", "--env", "default"]).ok().stdout,
    );
    let jwks = jwks.to_str().unwrap();
    let t = sign(
        &kw,
        "default",
        r#"{"sub":"alice","aud":"api","permissions":["orders.read"]}"#,
        &["--ttl", "5m"],
    );
    let claims = verify_ok(&kw, jwks, &t);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["permissions"][0], "orders.read");
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(exp - iat, 300);
    assert!(claims["jti"].as_str().unwrap().len() >= 20);
    kw.run(&[
        "token",
        "verify",
        "--jwks",
        jwks,
        "--iss",
        "http://127.0.0.1:8080/",
        &t,
    ])
    .fails_with("issuer");
    kw.run(&["token", "verify", "--jwks", jwks, "--aud", "other", &t])
        .fails_with("audience");
    kw.run(&["token", "verify", "--jwks", jwks, "--typ", "rt+jwt", &t])
        .fails_with("typ");
    let later = (exp + 61).to_string();
    kw.run(&["token", "verify", "--jwks", jwks, "--now", &later, &t])
        .fails_with("expired");
    // Change one signature character (not the last, whose low bits must stay zero).
    let mut bad: Vec<char> = t.chars().collect();
    let i = bad.len() - 10;
    bad[i] = if bad[i] == 'A' { 'B' } else { 'A' };
    let bad: String = bad.into_iter().collect();
    kw.run(&["token", "verify", "--jwks", jwks, &bad])
        .fails_with("token rejected");
    // Token from stdin.
    let mut c = kw.cmd();
    c.args(["token", "verify", "--jwks", jwks, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(t.as_bytes()).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    // Decode says it is unverified.
    let d = kw.run(&["token", "decode", &bad]);
    d.ok();
    assert_eq!(d.json()["verified"], false);
    assert!(d.stderr.contains("UNVERIFIED"));
    kw.run(&["token", "decode", "a.b"]).fails_with("three");
}

/// A server on 127.0.0.1 that answers one request with `response`.
fn answer_once(response: String) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(response.as_bytes()).unwrap();
    });
    (addr, server)
}

#[test]
fn verify_fetches_jwks_from_a_url() {
    let kw = Kw::new();
    kw.init();
    let body = kw
        .run(&["keys", "export", "--env", "default"])
        .ok()
        .stdout
        .clone();
    let t = sign(&kw, "default", r#"{"sub":"bob"}"#, &[]);
    let (addr, server) = answer_once(format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()));
    let url = format!("http://{addr}/.well-known/jwks.json");
    let claims = kw.run(&["token", "verify", "--jwks", &url, &t]).ok().json();
    assert_eq!(claims["sub"], "bob");
    server.join().unwrap();
    // Nothing listening: a one-line error.
    kw.run(&["token", "verify", "--jwks", &url, &t])
        .fails_with("cannot fetch the JWK Set")
        .fails_with("connection failed");
    // An error status is named.
    let (addr, server) = answer_once(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
    );
    let url = format!("http://{addr}/jwks");
    kw.run(&["token", "verify", "--jwks", &url, &t])
        .fails_with(&format!("{url} answered 503 Service Unavailable"));
    server.join().unwrap();
    // Plain http to a host that is not loopback: refused before any
    // request, with the way out.
    kw.run(&["token", "verify", "--jwks", "http://keys.example/jwks", &t])
        .fails_with("plain http to a host that is not loopback")
        .fails_with("--allow-http");
}

#[test]
fn jws_verify_prints_the_payload() {
    let kw = Kw::new();
    kw.init();
    let jwks: serde_json::Value = kw.run(&["keys", "export", "--env", "default"]).ok().json();
    let jwk = write(kw.dir.path(), "k.jwk", &jwks["keys"][0].to_string());
    let t = sign(&kw, "default", r#"{"sub":"carol"}"#, &[]);
    let out = kw.run(&["jws", "verify", "--key", jwk.to_str().unwrap(), &t]);
    out.ok();
    let payload: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(payload["sub"], "carol");
    let other = Kw::new();
    other.init();
    let t2 = sign(&other, "default", r#"{"sub":"eve"}"#, &[]);
    kw.run(&["jws", "verify", "--key", jwk.to_str().unwrap(), &t2])
        .fails_with("rejected");
}

#[test]
fn jwk_pem_round_trip_with_openssl() {
    let kw = Kw::new();
    let d = kw.dir.path();
    for (alg, gen) in [
        (
            "ES256",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
        ),
        (
            "ES384",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
            ],
        ),
        (
            "ES512",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-521",
            ],
        ),
        ("EdDSA", vec!["genpkey", "-algorithm", "ED25519"]),
        (
            "RS256",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
        ),
    ] {
        let key = write(d, "key.pem", &openssl(&gen));
        let public = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
        let pubfile = write(d, "pub.pem", &public);
        let jwk = kw
            .run(&["jwk", "from-pem", pubfile.to_str().unwrap()])
            .ok()
            .json();
        assert_eq!(jwk["alg"], alg);
        let jwkfile = write(d, "k.jwk", &jwk.to_string());
        let pem = kw
            .run(&["jwk", "to-pem", jwkfile.to_str().unwrap()])
            .ok()
            .stdout
            .clone();
        assert_eq!(pem.trim(), public.trim(), "{alg}: SPKI PEM round trip");
        // openssl reads what we wrote.
        let ours = write(d, "ours.pem", &pem);
        openssl(&["pkey", "-pubin", "-in", ours.to_str().unwrap(), "-noout"]);
    }
}

#[test]
fn import_pkcs1_pkcs8_and_sec1_then_sign_with_them() {
    let kw = Kw::new();
    kw.init();
    let d = kw.dir.path().to_path_buf();
    let cases = [
        (
            "RS256",
            "RSA PRIVATE KEY",
            vec!["genrsa", "-traditional", "2048"],
        ),
        (
            "PS256",
            "PRIVATE KEY",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:3072",
            ],
        ),
        (
            "ES256",
            "EC PRIVATE KEY",
            vec!["ecparam", "-name", "prime256v1", "-genkey"],
        ),
        (
            "ES384",
            "PRIVATE KEY",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
            ],
        ),
        (
            "EdDSA",
            "PRIVATE KEY",
            vec!["genpkey", "-algorithm", "ED25519"],
        ),
    ];
    for (i, (alg, tag, gen)) in cases.iter().enumerate() {
        let pem = openssl(gen);
        assert!(
            pem.contains(&format!("BEGIN {tag}")),
            "{alg}: openssl produced {tag}"
        );
        let file = write(&d, &format!("k{i}.pem"), &pem);
        let env = format!("imp{i}");
        let issuer = format!("https://imp.example/{i}");
        kw.run(&["env", "create", &env, "--issuer", &issuer, "--no-key"])
            .ok();
        let kid = format!("imported-{i}");
        let rec = kw
            .run(&[
                "keys",
                "import",
                "--env",
                &env,
                "--alg",
                alg,
                "--pem",
                file.to_str().unwrap(),
                "--kid",
                &kid,
                "--json",
            ])
            .ok()
            .json();
        assert_eq!(rec["origin"], "imported");
        assert_eq!(rec["state"], "active");
        // The imported key signs, and its public half (from openssl) verifies.
        let t = sign(&kw, &env, r#"{"sub":"imp"}"#, &[]);
        let public = write(
            &d,
            "p.pem",
            &openssl(&["pkey", "-in", file.to_str().unwrap(), "-pubout"]),
        );
        let jwk = kw
            .run(&[
                "jwk",
                "from-pem",
                "--alg",
                alg,
                "--kid",
                &kid,
                public.to_str().unwrap(),
            ])
            .ok()
            .stdout
            .clone();
        let jwkfile = write(&d, "p.jwk", &jwk);
        kw.run(&["token", "verify", "--jwks", jwkfile.to_str().unwrap(), &t])
            .ok();
    }
}

#[test]
fn ml_dsa_keys_sign_and_verify_through_the_generic_paths() {
    let kw = Kw::new();
    kw.run(&[
        "init",
        "--issuer",
        "http://127.0.0.1:8080",
        "--alg",
        "ML-DSA-65",
    ])
    .ok();
    // A second parameter set, generated in the same environment.
    kw.run(&["keys", "generate", "--env", "default", "--alg", "ML-DSA-87"])
        .ok();
    let keys = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (alg, bits) in [("ML-DSA-65", 1952 * 8), ("ML-DSA-87", 2592 * 8)] {
        let k = keys.iter().find(|k| k["alg"] == alg).expect(alg);
        assert_eq!(
            k["curve"],
            serde_json::Value::Null,
            "an AKP key has no curve"
        );
        assert_eq!(k["size"], bits);
    }
    let table = kw
        .run(&["keys", "list", "--env", "default"])
        .ok()
        .stdout
        .clone();
    assert!(table.contains("ML-DSA-87"), "{table}");

    let exported = kw
        .run(&["keys", "export", "--env", "default"])
        .ok()
        .stdout
        .clone();
    let set: serde_json::Value = serde_json::from_str(&exported).unwrap();
    for k in set["keys"].as_array().unwrap() {
        assert_eq!(k["kty"], "AKP");
        assert!(k.get("priv").is_none());
    }
    let jwks = write(kw.dir.path(), "jwks.json", &exported);
    let jwks = jwks.to_str().unwrap();
    let t = sign(&kw, "default", r#"{"sub":"alice","aud":"api"}"#, &[]);
    let header = keyward_jose::dangerous::decode_unverified(&t).unwrap().0;
    assert_eq!(header["alg"], "ML-DSA-65");
    let claims = verify_ok(&kw, jwks, &t);
    assert_eq!(claims["sub"], "alice");
    let mut bad: Vec<char> = t.chars().collect();
    let i = bad.len() - 10;
    bad[i] = if bad[i] == 'A' { 'B' } else { 'A' };
    let bad: String = bad.into_iter().collect();
    kw.run(&["token", "verify", "--jwks", jwks, &bad])
        .fails_with("signature does not verify");
}

/// The 32-byte seed `seed` of `alg` as a private AKP JWK (RFC 9964 §3-4),
/// with the `pub` it derives (or `pub_of`'s when given).
fn akp_private_jwk(alg: &str, seed: &[u8], pub_of: Option<&[u8]>) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let public_of = |seed: &[u8]| {
        let k = keyward_jose::PrivateKey::from_seed(alg.parse().unwrap(), seed).unwrap();
        match k.public_key().material() {
            keyward_jose::PublicMaterial::MlDsa { public, .. } => public.clone(),
            _ => unreachable!("an ML-DSA key"),
        }
    };
    let public = public_of(pub_of.unwrap_or(seed));
    serde_json::json!({"kty": "AKP", "alg": alg, "pub": b64(&public), "priv": b64(seed)})
        .to_string()
}

/// ML-DSA keys come in as private AKP JWKs (`keys import --jwk`) and as
/// seed-form PKCS#8 PEM (RFC 9881), go out as JWKs and SPKI PEM, and
/// `jwk to-pem` / `from-pem` convert between the two forms both ways.
#[test]
fn ml_dsa_keys_import_export_and_convert() {
    use base64::Engine;
    let kw = Kw::new();
    kw.init();
    let d = kw.dir.path();
    let import = |args: &[&str]| {
        let mut a = vec![
            "keys",
            "import",
            "--env",
            "default",
            "--json",
            "--immediate",
        ];
        a.extend_from_slice(args);
        kw.run(&a)
    };
    let mut imported = Vec::new();
    for (alg, oid_last) in [
        ("ML-DSA-44", 0x11u8),
        ("ML-DSA-65", 0x12),
        ("ML-DSA-87", 0x13),
    ] {
        let seed = keyward_jose::crypto::random_bytes::<32>();
        let other = keyward_jose::crypto::random_bytes::<32>();

        // Refused, changing nothing: a seed that does not derive `pub`, and
        // a JWK of another parameter set than --alg names.
        let before = kw.snapshot();
        let bad = write(d, "bad.jwk", &akp_private_jwk(alg, &seed, Some(&other)));
        import(&["--jwk", bad.to_str().unwrap()])
            .fails_with("the private seed (priv) does not derive the public key (pub)");
        let file = write(d, &format!("{alg}.jwk"), &akp_private_jwk(alg, &seed, None));
        let other_alg = if alg == "ML-DSA-44" {
            "ML-DSA-65"
        } else {
            "ML-DSA-44"
        };
        import(&["--jwk", file.to_str().unwrap(), "--alg", other_alg])
            .fails_with(&format!("it is an {alg} key, not {other_alg}"));
        assert_eq!(before, kw.snapshot());

        // A private JWK: its seed is what keyward seals; the kid is the
        // RFC 7638 thumbprint of its public members.
        let rec = import(&["--jwk", file.to_str().unwrap()]).ok().json();
        assert_eq!(
            (rec["alg"].as_str(), rec["origin"].as_str()),
            (Some(alg), Some("imported"))
        );
        let want = keyward_jose::PrivateKey::from_seed(alg.parse().unwrap(), &seed).unwrap();
        assert_eq!(rec["kid"], want.public_key().thumbprint());
        imported.push(rec["kid"].as_str().unwrap().to_string());

        // Seed-form PKCS#8 (RFC 9881), as OpenSSL 3.5 writes it.
        let other_key = keyward_jose::PrivateKey::from_seed(alg.parse().unwrap(), &other).unwrap();
        let pem = pem_block("PRIVATE KEY", &other_key.to_pkcs8_der());
        let pem = write(d, &format!("{alg}.pem"), &pem);
        let rec = import(&["--pem", pem.to_str().unwrap(), "--alg", alg])
            .ok()
            .json();
        assert_eq!(rec["kid"], other_key.public_key().thumbprint());
        imported.push(rec["kid"].as_str().unwrap().to_string());

        // SPKI (RFC 9881 §4): AlgorithmIdentifier id-ml-dsa-* with no parameters.
        let spki = other_key.public_key().to_spki_der();
        let oid = [
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, oid_last,
        ];
        let at = spki
            .windows(oid.len())
            .position(|w| w == oid)
            .expect("the ML-DSA OID");
        assert_eq!(
            &spki[at - 2..at],
            &[0x30, 0x0b],
            "an AlgorithmIdentifier of the OID alone"
        );
        assert_eq!(spki[at + oid.len()], 0x03, "then the BIT STRING");
    }

    let set = kw.run(&["keys", "export", "--env", "default"]).ok().json();
    let pems = kw
        .run(&["keys", "export", "--env", "default", "--format", "pem"])
        .ok()
        .stdout
        .clone();
    for kid in &imported {
        let jwk = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .expect("exported");
        assert_eq!(jwk["kty"], "AKP");
        assert!(jwk.get("priv").is_none());
        // `keys export --format pem` block of this kid.
        let pem = pems
            .split(&format!("kid: {kid} "))
            .nth(1)
            .and_then(|rest| rest.split("-----END PUBLIC KEY-----\n").next())
            .map(|b| {
                format!(
                    "{}-----END PUBLIC KEY-----\n",
                    &b[b.find("-----BEGIN").unwrap()..]
                )
            })
            .expect("a PEM block");
        // JWK -> PEM is the exported PEM; PEM -> JWK (algorithm found from
        // the key itself) is the exported JWK.
        let jwk_file = write(d, "one.jwk", &jwk.to_string());
        let to_pem = kw
            .run(&["jwk", "to-pem", jwk_file.to_str().unwrap()])
            .ok()
            .stdout
            .clone();
        assert_eq!(to_pem, pem);
        let pem_file = write(d, "one.pem", &pem);
        let from_pem = kw
            .run(&["jwk", "from-pem", pem_file.to_str().unwrap()])
            .ok()
            .json();
        assert_eq!(&from_pem, jwk);
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                pem.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        let alg: keyward_jose::Algorithm = jwk["alg"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            keyward_jose::PublicKey::from_der(alg, &der)
                .unwrap()
                .thumbprint(),
            *kid
        );
    }
}

/// PEM text of one block.
fn pem_block(tag: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n",
        lines.join("\n")
    )
}

/// An ML-DSA-87 signature is 6,170 base64url characters of the 8,192 bytes
/// a gate accepts: `token sign` refuses claims that would push the token
/// past the limit (nothing is audited), where an ES256 token of the same
/// claims is fine.
#[test]
fn token_sign_refuses_an_ml_dsa_87_token_over_the_gate_limit() {
    let permissions: Vec<String> = (0..90).map(|i| format!("orders.{i:04}.read")).collect();
    let claims =
        serde_json::json!({"sub": "alice", "aud": "api", "permissions": permissions}).to_string();
    let small = serde_json::json!({"sub": "alice", "aud": "api", "permissions": permissions[..10]})
        .to_string();
    for (alg, fits) in [("ML-DSA-87", false), ("ES256", true)] {
        let kw = Kw::new();
        kw.run(&["init", "--issuer", "http://127.0.0.1:8080", "--alg", alg])
            .ok();
        let jwks = write(
            kw.dir.path(),
            "jwks.json",
            &kw.run(&["keys", "export", "--env", "default"]).ok().stdout,
        );
        let jwks = jwks.to_str().unwrap();
        let before = kw.snapshot();
        let r = kw.run(&["token", "sign", "--env", "default", "--claims", &claims]);
        if fits {
            let t = r.ok().stdout.trim().to_string();
            assert!(t.len() < 8192);
            assert_eq!(
                verify_ok(&kw, jwks, &t)["permissions"]
                    .as_array()
                    .unwrap()
                    .len(),
                90
            );
        } else {
            r.fails_with(
                "refused to sign a token keyward's gate would refuse: signed with ML-DSA-87, it is",
            );
            assert!(
                r.stderr.contains("over the 8192-byte limit gates enforce"),
                "{}",
                r.stderr
            );
            assert_eq!(before, kw.snapshot(), "nothing signed, nothing audited");
            // A typical access token fits, and verifies.
            let t = sign(&kw, "default", &small, &[]);
            assert!(t.len() > 6170 && t.len() <= 8192, "{}", t.len());
            verify_ok(&kw, jwks, &t);
        }
    }
}
