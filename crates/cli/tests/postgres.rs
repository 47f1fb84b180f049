//! The same CLI against PostgreSQL (`--database-url`), when
//! `KEYWARD_TEST_DATABASE_URL` is set; each test gets its own schema.

mod common;

use std::process::Command;

use common::Kw;

struct Schema {
    base: String,
    name: String,
}

impl Schema {
    fn new() -> Option<Schema> {
        let base = common::postgres_url("the PostgreSQL CLI test")?;
        let name = format!(
            "kw_cli_{}",
            keyward_jose::crypto::hex(&keyward_jose::crypto::random_bytes::<6>())
        );
        psql(&base, &format!("CREATE SCHEMA {name}"));
        Some(Schema { base, name })
    }
    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        psql(&self.base, &format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

fn psql(url: &str, sql: &str) {
    let st = Command::new("psql")
        .args([url, "-q", "-c", sql])
        .status()
        .expect("psql is installed");
    assert!(st.success(), "psql {sql}");
}

#[test]
fn key_management_on_postgres() {
    let Some(schema) = Schema::new() else { return };
    let mut kw = Kw::new();
    kw.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
    kw.init();
    // The store is in PostgreSQL: no SQLite file; the root key is in the data dir.
    assert!(!kw.data_dir().join("keyward.db").exists());
    assert!(kw.data_dir().join("root.key").exists());
    kw.run(&["init", "--issuer", "http://x.example", "--alg", "ES256"])
        .fails_with("already initialized");
    kw.run(&[
        "env",
        "create",
        "prod",
        "--issuer",
        "https://auth.example.com",
        "--no-key",
    ])
    .ok();
    kw.run(&[
        "keys", "generate", "--env", "prod", "--alg", "ES384", "--kid", "pg-1",
    ])
    .ok();
    kw.run(&["keys", "rotate", "--env", "prod", "--lead", "1h"])
        .ok();
    let keys = kw
        .run(&["keys", "list", "--env", "prod", "--json"])
        .ok()
        .json();
    let states: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["active", "pending"]);
    let t = kw
        .run(&[
            "token",
            "sign",
            "--env",
            "prod",
            "--claims",
            r#"{"sub":"pg"}"#,
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let jwks = common::write(
        kw.dir.path(),
        "jwks.json",
        &kw.run(&["keys", "export", "--env", "prod"]).ok().stdout,
    );
    kw.run(&["token", "verify", "--jwks", jwks.to_str().unwrap(), &t])
        .ok();
    kw.run(&["root-key", "rotate"]).ok();
    kw.run(&["token", "sign", "--env", "prod", "--claims", "{}"])
        .ok();
    let before = kw.snapshot();
    kw.run(&[
        "keys", "generate", "--env", "prod", "--alg", "RS256", "--bits", "1024",
    ])
    .fails_with("2048");
    kw.run(&["keys", "revoke", "nope"]).fails_with("nope");
    assert_eq!(before, kw.snapshot());
    kw.run(&["audit", "verify"]).ok();
}
