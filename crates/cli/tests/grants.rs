//! Token exchange and pushed authorization requests from the command line:
//! `clients create|update --exchange-issuer / --no-exchange-issuers /
//! --require-par` (and what they refuse, changing nothing), and the
//! `[[token_exchange.trusted_issuers]]` section of the server configuration.

mod common;

use common::Kw;
use serde_json::json;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

#[test]
fn exchange_and_par_client_fields_are_set_and_validated() {
    let kw = Kw::new();
    kw.init();
    let c = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "orders-api",
            "--grant-type",
            "client_credentials",
            "--grant-type",
            EXCHANGE,
            "--exchange-issuer",
            "https://sso.example.com/realms/apps",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(c["grant_types"], json!(["client_credentials", EXCHANGE]));
    assert_eq!(
        c["exchange_issuers"],
        json!(["https://sso.example.com/realms/apps"])
    );
    assert_eq!(c["require_pushed_authorization_requests"], false);
    let id = c["client_id"].as_str().unwrap().to_owned();
    let before = kw.snapshot();
    for (args, needle) in [
        (
            vec!["--exchange-issuer", "http://sso.example.com"],
            "exchange issuer",
        ),
        (
            vec![
                "--exchange-issuer",
                "https://a.example",
                "--exchange-issuer",
                "https://a.example",
            ],
            "twice",
        ),
        (
            vec![
                "--exchange-issuer",
                "https://a.example",
                "--no-exchange-issuers",
            ],
            "cannot be used with",
        ),
    ] {
        let mut a = vec!["clients", "update", "--env", "default", id.as_str()];
        a.extend(args.iter().copied());
        kw.run(&a).fails_with(needle);
        assert_eq!(kw.snapshot(), before, "{a:?} changed something");
    }
    let c = kw
        .run(&[
            "clients",
            "update",
            "--env",
            "default",
            &id,
            "--no-exchange-issuers",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(c["exchange_issuers"], json!([]));
    // PAR required for a code-flow client.
    let c = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "web",
            "--grant-type",
            "authorization_code",
            "--redirect-uri",
            "https://app.test/cb",
            "--require-par",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(c["require_pushed_authorization_requests"], true);
}

#[test]
fn config_check_shows_token_exchanges_trusted_issuers() {
    let kw = Kw::new();
    let path = kw.dir.path().join("kw.toml");
    std::fs::write(
        &path,
        concat!(
            "[[token_exchange.trusted_issuers]]\n",
            "env = \"prod\"\n",
            "issuer = \"https://sso.example.com/realms/apps\"\n",
            "audience = \"keyward-prod\"\n",
            "algorithms = [\"ES256\"]\n",
        ),
    )
    .unwrap();
    let c = kw
        .run(&["config", "check", "--config", path.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(
        c["token_exchange"],
        json!([{
            "env": "prod",
            "issuer": "https://sso.example.com/realms/apps",
            "audience": "keyward-prod",
            "jwks_uri": null,
            "algorithms": ["ES256"],
            "max_token_lifetime_secs": 43200,
        }])
    );
    std::fs::write(
        &path,
        "[[token_exchange.trusted_issuers]]\nenv = \"prod\"\nissuer = \"https://sso.example.com\"\naudience = \"\"\n",
    )
    .unwrap();
    kw.run(&["config", "check", "--config", path.to_str().unwrap()])
        .fails_with("audience is required");
}
