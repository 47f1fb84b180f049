//! Every bad input of the key-management CLI ends with a one-line error,
//! exit code 1, and a store exactly as it was.

mod common;

use common::{write, Kw};

/// Runs `args` expecting exit 1 mentioning `needle`, and checks that nothing changed.
fn refused(kw: &Kw, args: &[&str], needle: &str) {
    let before = kw.snapshot();
    kw.run(args).fails_with(needle);
    assert_eq!(before, kw.snapshot(), "{args:?} changed the store");
}

#[test]
fn unknown_algorithms_and_short_rsa_sizes() {
    let kw = Kw::new();
    kw.init();
    for alg in ["HS256", "none", "RS1", "es256"] {
        refused(
            &kw,
            &["keys", "generate", "--env", "default", "--alg", alg],
            "algorithm",
        );
    }
    refused(
        &kw,
        &[
            "keys", "generate", "--env", "default", "--alg", "RS256", "--bits", "1024",
        ],
        "2048",
    );
    refused(
        &kw,
        &[
            "keys", "generate", "--env", "default", "--alg", "RS256", "--bits", "2047",
        ],
        "2048",
    );
    refused(
        &kw,
        &[
            "keys", "generate", "--env", "default", "--alg", "RS256", "--bits", "5000",
        ],
        "2048, 3072 or 4096",
    );
    refused(
        &kw,
        &[
            "keys", "generate", "--env", "default", "--alg", "ES256", "--bits", "2048",
        ],
        "RSA",
    );
    refused(
        &kw,
        &[
            "env",
            "create",
            "x",
            "--issuer",
            "https://x",
            "--alg",
            "HS512",
        ],
        "algorithm",
    );
    refused(
        &kw,
        &[
            "keys", "generate", "--env", "default", "--alg", "ES256", "--kid", "bad kid!",
        ],
        "kid",
    );
}

#[test]
fn unknown_environments_and_kids() {
    let kw = Kw::new();
    kw.init();
    refused(
        &kw,
        &["keys", "generate", "--env", "nope", "--alg", "ES256"],
        "nope",
    );
    refused(&kw, &["keys", "list", "--env", "nope"], "nope");
    refused(&kw, &["keys", "rotate", "--env", "nope"], "nope");
    refused(&kw, &["keys", "export", "--env", "nope"], "nope");
    refused(&kw, &["keys", "retire", "no-such-kid"], "no-such-kid");
    refused(&kw, &["keys", "revoke", "no-such-kid"], "no-such-kid");
    refused(
        &kw,
        &["token", "sign", "--env", "nope", "--claims", "{}"],
        "nope",
    );
    refused(&kw, &["env", "show", "nope"], "nope");
    refused(
        &kw,
        &["env", "create", "default", "--issuer", "https://x"],
        "already exists",
    );
    refused(
        &kw,
        &["env", "create", "y", "--issuer", "not a url"],
        "issuer",
    );
    refused(
        &kw,
        &["env", "update", "default", "--lead", "100d"],
        "rotation period",
    );
}

#[test]
fn malformed_pem_and_jwk() {
    let kw = Kw::new();
    kw.init();
    let d = kw.dir.path();
    // PEM armour around a body that is not even base64: no key at all.
    let label = "PRIVATE KEY";
    let garbage = write(
        d,
        "garbage.pem",
        &format!("-----BEGIN {label}-----\nnot base64!!\n-----END {label}-----\n"),
    );
    refused(
        &kw,
        &[
            "keys",
            "import",
            "--env",
            "default",
            "--alg",
            "ES256",
            "--pem",
            garbage.to_str().unwrap(),
        ],
        "PEM",
    );
    let empty = write(d, "empty.pem", "");
    refused(
        &kw,
        &[
            "keys",
            "import",
            "--env",
            "default",
            "--alg",
            "ES256",
            "--pem",
            empty.to_str().unwrap(),
        ],
        "PEM",
    );
    // A public key where a private key is expected.
    let public = common::openssl(&["genpkey", "-algorithm", "ED25519"]);
    let pubfile = write(d, "k.pem", &public);
    let pub_pem = common::openssl(&["pkey", "-in", pubfile.to_str().unwrap(), "-pubout"]);
    let pubonly = write(d, "pub.pem", &pub_pem);
    refused(
        &kw,
        &[
            "keys",
            "import",
            "--env",
            "default",
            "--alg",
            "EdDSA",
            "--pem",
            pubonly.to_str().unwrap(),
        ],
        "PUBLIC KEY",
    );
    // A key of the wrong family for the algorithm.
    refused(
        &kw,
        &[
            "keys",
            "import",
            "--env",
            "default",
            "--alg",
            "ES256",
            "--pem",
            pubfile.to_str().unwrap(),
        ],
        "ES256",
    );
    // A 1024-bit RSA key.
    let small = write(
        d,
        "small.pem",
        &common::openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ]),
    );
    refused(
        &kw,
        &[
            "keys",
            "import",
            "--env",
            "default",
            "--alg",
            "RS256",
            "--pem",
            small.to_str().unwrap(),
        ],
        "2048",
    );
    let missing = d.join("missing.pem");
    refused(
        &kw,
        &[
            "keys",
            "import",
            "--env",
            "default",
            "--alg",
            "ES256",
            "--pem",
            missing.to_str().unwrap(),
        ],
        "cannot read",
    );
    // Malformed JWKs for the converters.
    let bad_jwk = write(
        d,
        "bad.jwk",
        r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#,
    );
    kw.run(&["jwk", "to-pem", bad_jwk.to_str().unwrap()])
        .fails_with("32 bytes");
    let not_json = write(d, "nj.jwk", "{not json");
    kw.run(&["jwk", "to-pem", not_json.to_str().unwrap()])
        .fails_with("JSON");
    let private_jwk = write(
        d,
        "p.jwk",
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#,
    );
    kw.run(&["jwk", "to-pem", private_jwk.to_str().unwrap()])
        .fails_with("private");
    // A JWK Set: say so, with its kids and how to pick one.
    let k = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo""#;
    let set = write(
        d,
        "set.json",
        &format!(r#"{{"keys":[{k},"kid":"k1"}},{k},"kid":"k2"}}]}}"#),
    );
    let r = kw.run(&["jwk", "to-pem", set.to_str().unwrap()]);
    r.fails_with("JWK Set of 2 key(s)");
    assert!(
        r.stderr.contains(r#"kids: "k1", "k2""#)
            && r.stderr.contains(r#"jq '.keys[] | select(.kid == "k1")'"#),
        "{}",
        r.stderr
    );
    // An X25519 key: a key-agreement curve, not a list of P-curves.
    let x25519 = write(
        d,
        "x.jwk",
        r#"{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}"#,
    );
    let r = kw.run(&["jwk", "to-pem", x25519.to_str().unwrap()]);
    r.fails_with("only Ed25519 keys sign");
    assert!(!r.stderr.contains("P-256"), "{}", r.stderr);
    let not_pem = write(d, "np.pem", "hello");
    kw.run(&["jwk", "from-pem", not_pem.to_str().unwrap()])
        .fails_with("PEM");
}

#[test]
fn wrong_or_missing_root_key() {
    let kw = Kw::new();
    kw.init();
    let other = "q3tf3sJ5n3tT8dR4Pp2vN0xw6kq1Zr2fY7uQ9mS5aHc=";
    let before = kw.snapshot();
    let out = kw.run_with(
        &["keys", "generate", "--env", "default", "--alg", "ES256"],
        &[("KEYWARD_ROOT_KEY", other)],
    );
    out.fails_with("KEYWARD_ROOT_KEY");
    assert!(out.stderr.contains("does not open this store"));
    let out = kw.run_with(
        &["token", "sign", "--env", "default", "--claims", "{}"],
        &[("KEYWARD_ROOT_KEY", "not-base64!")],
    );
    out.fails_with("KEYWARD_ROOT_KEY");
    let nofile = kw.dir.path().join("nope.key");
    kw.run_with(
        &["keys", "rotate", "--env", "default"],
        &[("KEYWARD_ROOT_KEY_FILE", nofile.to_str().unwrap())],
    )
    .fails_with("KEYWARD_ROOT_KEY_FILE");
    assert_eq!(before, kw.snapshot());
    // The data dir's own file, missing.
    let saved = std::fs::read(kw.data_dir().join("root.key")).unwrap();
    std::fs::remove_file(kw.data_dir().join("root.key")).unwrap();
    kw.run(&["keys", "rotate", "--env", "default"])
        .fails_with("root.key");
    std::fs::write(kw.data_dir().join("root.key"), saved).unwrap();
    assert_eq!(before, kw.snapshot());
}

#[test]
fn second_init_and_uninitialized_dirs() {
    let kw = Kw::new();
    kw.init();
    refused(
        &kw,
        &[
            "init",
            "--issuer",
            "http://127.0.0.1:9999",
            "--alg",
            "ES256",
        ],
        "already initialized",
    );
    let fresh = Kw::new();
    fresh
        .run(&["keys", "list", "--env", "default"])
        .fails_with("keyward init");
    assert!(
        !fresh.data_dir().join("keyward.db").exists(),
        "a read command must not create a store"
    );
    fresh
        .run(&["init", "--issuer", "ftp://x"])
        .fails_with("issuer");
    assert!(!fresh.data_dir().exists());
}

#[test]
fn usage_errors_are_one_line_exit_1() {
    let kw = Kw::new();
    kw.init();
    kw.run(&["keys", "generate", "--alg", "ES256"])
        .fails_with("--env");
    kw.run(&["keys", "frobnicate"]).fails_with("frobnicate");
    kw.run(&["keys", "rotate", "--env", "default", "--lead", "soon"])
        .fails_with("soon");
    kw.run(&["token", "sign", "--env", "default", "--claims", "[1]"])
        .fails_with("JSON object");
    kw.run(&[
        "token",
        "sign",
        "--env",
        "default",
        "--claims",
        r#"{"exp":1}"#,
    ])
    .fails_with("set by keyward");
    kw.run(&[
        "token", "sign", "--env", "default", "--claims", "{}", "--ttl", "30d",
    ])
    .fails_with("ttl");
}
