//! Environments from the command line: `env create` makes the first key,
//! an issuer URL belongs to one environment, `env delete` backs out, and
//! `env show` follows the same output rules as every listing.

mod common;

use common::Kw;
use serde_json::Value;

fn env_names(kw: &Kw) -> Vec<String> {
    kw.run(&["env", "list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn audit_actions(kw: &Kw) -> Vec<String> {
    kw.run(&["audit", "list", "--json", "--limit", "10000"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn env_create_makes_the_first_key_in_the_same_transaction() {
    let kw = Kw::new();
    kw.init();
    let v = kw
        .run(&[
            "env",
            "create",
            "prod",
            "--issuer",
            "https://auth.example.com/prod",
            "--alg",
            "ES384",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["policy"]["alg"], "ES384");
    assert_eq!(v["first_key"]["state"], "active");
    assert_eq!(v["first_key"]["alg"], "ES384");
    let keys = kw
        .run(&["keys", "list", "--env", "prod", "--json"])
        .ok()
        .json();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["kid"], v["first_key"]["kid"]);
    // It signs at once: no window in which the environment cannot.
    kw.run(&["token", "sign", "--env", "prod", "--claims", "{}"])
        .ok();
    let actions = audit_actions(&kw);
    assert_eq!(
        &actions[actions.len() - 3..],
        ["env.create", "key.generate", "token.sign"]
    );

    // RSA with its size; the human output names the key.
    let out = kw.run(&[
        "env",
        "create",
        "rsa",
        "--issuer",
        "https://auth.example.com/rsa",
        "--alg",
        "PS256",
        "--bits",
        "2048",
    ]);
    out.ok();
    assert!(out.stdout.contains("active key:"), "{}", out.stdout);
    assert!(out.stdout.contains("PS256, 2048 bits"), "{}", out.stdout);

    // --no-key: an environment without a key, as before.
    let v = kw
        .run(&[
            "env",
            "create",
            "later",
            "--issuer",
            "https://auth.example.com/later",
            "--no-key",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["first_key"], Value::Null);
    let keys = kw
        .run(&["keys", "list", "--env", "later", "--json"])
        .ok()
        .json();
    assert_eq!(keys, serde_json::json!([]));

    // Bad input: refused before anything is written.
    let before = kw.snapshot();
    for (args, needle) in [
        (
            vec!["--alg", "ES256", "--bits", "2048"],
            "--bits applies to RSA",
        ),
        (vec!["--alg", "RS256", "--bits", "1024"], "not offered"),
        // A device store that is not configured is refused, saying how.
        (
            vec!["--key-store", "pkcs11"],
            "no PKCS#11 module is configured (set [pkcs11] module",
        ),
        (vec!["--key-store", "aws-kms"], "AWS KMS is not configured"),
        (vec!["--key-store", "floppy"], "invalid value"),
        (vec!["--lead", "0s"], "lead"),
    ] {
        let mut a = vec![
            "env",
            "create",
            "bad",
            "--issuer",
            "https://auth.example.com/bad",
        ];
        a.extend(args.iter().copied());
        kw.run(&a).fails_with(needle);
    }
    kw.run(&[
        "env",
        "create",
        "bad",
        "--issuer",
        "https://auth.example.com/bad",
        "--key-store",
        "local",
        "--alg",
        "EdDSA",
        "--no-key",
    ])
    .ok();
    assert_ne!(before, kw.snapshot());
}

#[test]
fn an_issuer_url_belongs_to_one_environment() {
    let kw = Kw::new();
    // prod's issuer is init's: http://127.0.0.1:8080.
    kw.init();
    kw.run(&[
        "env",
        "create",
        "staging",
        "--issuer",
        "https://auth.example.com/staging",
        "--alg",
        "ES256",
    ])
    .ok();
    let before = kw.snapshot();
    // The reproduction: a second environment at prod's issuer URL, however
    // spelled (trailing slash, host case, scheme), is refused and nothing
    // changes, so prod's JWKS and clients are untouched.
    for issuer in [
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8080/",
        "https://127.0.0.1:8080",
    ] {
        kw.run(&["env", "create", "dup", "--issuer", issuer, "--alg", "ES256"])
            .fails_with("already used by environment \"default\"");
        kw.run(&["env", "create", "dup", "--issuer", issuer, "--no-key"])
            .fails_with("already used by environment \"default\"");
        kw.run(&["env", "update", "staging", "--issuer", issuer])
            .fails_with("already used by environment \"default\"");
    }
    kw.run(&[
        "env",
        "update",
        "default",
        "--issuer",
        "https://AUTH.example.com/staging/",
    ])
    .fails_with("already used by environment \"staging\"");
    // Nor under another's endpoints on the same host: the longest issuer
    // path wins a request, so it would take default's token endpoint.
    for issuer in [
        "http://127.0.0.1:8080/oauth2",
        "http://127.0.0.1:8080/.well-known/",
        "http://127.0.0.1:8080/revocations",
    ] {
        kw.run(&["env", "create", "x", "--issuer", issuer, "--no-key"])
            .fails_with("lies under the endpoints of default");
        kw.run(&["env", "update", "staging", "--issuer", issuer])
            .fails_with("lies under the endpoints of default");
    }
    assert_eq!(before, kw.snapshot());
    kw.run(&[
        "env",
        "create",
        "beside",
        "--issuer",
        "http://127.0.0.1:8080/oauth",
        "--no-key",
    ])
    .ok();
    // An environment may keep (or re-spell) its own issuer URL.
    kw.run(&[
        "env",
        "update",
        "default",
        "--issuer",
        "http://127.0.0.1:8080/",
    ])
    .ok();
}

#[test]
fn env_delete_backs_out_and_refuses_what_is_in_use_without_force() {
    let kw = Kw::new();
    kw.init();
    kw.run(&[
        "env",
        "create",
        "dup",
        "--issuer",
        "https://auth.example.com/dup",
        "--alg",
        "ES256",
    ])
    .ok();
    let client = kw
        .run(&[
            "clients", "create", "--env", "dup", "--name", "c", "--scopes", "a", "--json",
        ])
        .ok()
        .json();
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let before = kw.snapshot();
    kw.run(&["env", "delete", "dup"])
        .fails_with("1 published key(s) and 1 client(s)");
    kw.run(&["env", "delete", "nope"]).fails_with("not found");
    assert_eq!(before, kw.snapshot());

    let d = kw
        .run(&["env", "delete", "dup", "--force", "--json"])
        .ok()
        .json();
    assert_eq!(d["deleted"], "dup");
    assert_eq!(d["clients"], serde_json::json!([client_id]));
    assert_eq!(env_names(&kw), ["default"]);
    let last = kw
        .run(&["audit", "list", "--json", "--limit", "10000"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "env.delete");
    assert_eq!(last["env"], "dup");
    assert_eq!(last["detail"]["forced"], true);
    kw.run(&["audit", "verify"]).ok();
    // The issuer URL is free again; an environment without keys or clients
    // goes without --force.
    kw.run(&[
        "env",
        "create",
        "dup",
        "--issuer",
        "https://auth.example.com/dup",
        "--no-key",
    ])
    .ok();
    let out = kw.run(&["env", "delete", "dup"]);
    out.ok();
    assert!(
        out.stdout.contains("deleted environment dup"),
        "{}",
        out.stdout
    );
}

#[test]
fn env_show_prints_for_people_and_json_for_machines() {
    let kw = Kw::new();
    kw.init();
    let out = kw.run(&["env", "show", "default"]);
    out.ok();
    // Not JSON (a syntax error, not an empty output that ends early).
    let e = serde_json::from_str::<Value>(&out.stdout).unwrap_err();
    assert!(
        e.is_syntax(),
        "plain output is not JSON: {e}: {}",
        out.stdout
    );
    for line in [
        "name:",
        "issuer:",
        "http://127.0.0.1:8080",
        "algorithm:",
        "ES256",
        "lead:",
        "2d",
        "rotate every:",
        "90d",
        "keys:",
        "1 active",
    ] {
        assert!(out.stdout.contains(line), "{line} in {}", out.stdout);
    }
    let v = kw.run(&["env", "show", "default", "--json"]).ok().json();
    assert_eq!(v["name"], "default");
    assert_eq!(v["policy"]["alg"], "ES256");
}

#[test]
fn init_says_how_to_run_keyward_when_it_is_not_on_path() {
    let kw = Kw::new();
    // PATH without this binary (as after `cargo run`): the next step names
    // the full path, and how to install it.
    let out = kw.run_with(
        &[
            "init",
            "--issuer",
            "http://127.0.0.1:8080",
            "--alg",
            "ES256",
        ],
        &[("PATH", "/usr/bin:/bin")],
    );
    out.ok();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_keyward")).unwrap();
    assert!(
        out.stdout
            .contains(&format!("next: {} keys list --env default", exe.display())),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("cargo install --path crates/cli"),
        "{}",
        out.stdout
    );
    // On PATH: just `keyward`.
    let kw = Kw::new();
    let dir = exe.parent().unwrap().display().to_string();
    let out = kw.run_with(
        &[
            "init",
            "--issuer",
            "http://127.0.0.1:8080",
            "--alg",
            "ES256",
        ],
        &[("PATH", &format!("{dir}:/usr/bin:/bin"))],
    );
    out.ok();
    assert!(
        out.stdout.contains("next: keyward keys list --env default"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("cargo install"), "{}", out.stdout);
}

#[test]
fn dpop_nonces_are_set_per_environment_and_shown() {
    let kw = Kw::new();
    kw.init();
    let show = |name: &str| kw.run(&["env", "show", name, "--json"]).ok().json();
    assert_eq!(show("default")["dpop_nonce"], "off");
    let v = kw
        .run(&[
            "env",
            "create",
            "prod",
            "--issuer",
            "https://auth.example.com/prod",
            "--dpop-nonce",
            "required",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["dpop_nonce"], "required");
    assert_eq!(show("prod")["dpop_nonce"], "required");
    let text = kw.run(&["env", "show", "prod"]);
    assert!(text.ok().stdout.contains("dpop nonce:"), "{}", text.stdout);
    kw.run(&["env", "update", "default", "--dpop-nonce", "required"])
        .ok();
    assert_eq!(show("default")["dpop_nonce"], "required");
    kw.run(&["env", "update", "prod", "--dpop-nonce", "off"])
        .ok();
    assert_eq!(show("prod")["dpop_nonce"], "off");
    // Not a setting: refused, nothing changed.
    let before = kw.run(&["env", "list", "--json"]).ok().json();
    let audit = audit_actions(&kw).len();
    let r = kw.run(&["env", "update", "default", "--dpop-nonce", "maybe"]);
    assert_eq!(r.code, 1, "a usage error: {}", r.stderr);
    assert!(r.stderr.contains("--dpop-nonce"), "{}", r.stderr);
    assert_eq!(kw.run(&["env", "list", "--json"]).ok().json(), before);
    assert_eq!(audit_actions(&kw).len(), audit);
}

#[test]
fn clients_update_moves_a_client_to_tls_client_auth_and_back() {
    let kw = Kw::new();
    kw.init();
    let c = kw
        .run(&[
            "clients", "create", "--env", "default", "--name", "svc", "--json",
        ])
        .ok()
        .json();
    let id = c["client_id"].as_str().unwrap();
    let v = kw
        .run(&[
            "clients",
            "update",
            "--env",
            "default",
            id,
            "--auth",
            "tls_client_auth",
            "--tls-subject-dn",
            "CN=svc, O=Example",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["auth"], "tls_client_auth");
    assert_eq!(v["tls_client_auth_subject_dn"], "CN=svc,O=Example");
    assert!(v.get("client_secret").is_none(), "{v}");
    // Without the name a tls_client_auth client needs: refused, unchanged.
    let before = kw
        .run(&["clients", "list", "--env", "default", "--json"])
        .ok()
        .json();
    kw.run(&[
        "clients",
        "update",
        "--env",
        "default",
        id,
        "--auth",
        "tls_client_auth",
        "--tls-subject-dn",
        "nope",
    ])
    .fails_with("tls_client_auth_subject_dn");
    kw.run(&[
        "clients",
        "update",
        "--env",
        "default",
        id,
        "--auth",
        "client-secret-basic",
        "--tls-san-dns",
        "svc.example",
    ])
    .fails_with("certificate subject");
    assert_eq!(
        kw.run(&["clients", "list", "--env", "default", "--json"])
            .ok()
            .json(),
        before
    );
    // Back to a secret: a new one, printed once.
    let v = kw
        .run(&[
            "clients",
            "update",
            "--env",
            "default",
            id,
            "--auth",
            "client-secret-basic",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["auth"], "client_secret_basic");
    assert!(v["client_secret"].as_str().unwrap().starts_with("kws_"));
    assert!(v.get("tls_client_auth_subject_dn").is_none(), "{v}");
}
