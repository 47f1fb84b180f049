//! `keyward jwk`: public key format conversion.

use crate::output::{out, outln};
use anyhow::{anyhow, Result};
use keyward_jose::{Algorithm, Jwk, KeyError, PublicKey};

use crate::args::JwkCmd;
use crate::context::read_input;

pub fn run(cmd: JwkCmd) -> Result<()> {
    match cmd {
        JwkCmd::ToPem { file } => {
            let text = read_input(file.as_deref())?;
            let jwk =
                Jwk::parse(text.trim().as_bytes(), Algorithm::RS256).map_err(|e| match e {
                    KeyError::IsKeySet(_) => anyhow!("{}", key_set_hint(&text, file.as_deref())),
                    e => e.into(),
                })?;
            out!("{}", jwk.key.to_pem());
        }
        JwkCmd::FromPem { file, alg, kid } => {
            let text = read_input(file.as_deref())?;
            let key = match alg {
                Some(a) => PublicKey::from_pem(a, &text)?,
                None => [Algorithm::ES256, Algorithm::ES384, Algorithm::ES512, Algorithm::EdDSA, Algorithm::RS256, Algorithm::MlDsa44, Algorithm::MlDsa65, Algorithm::MlDsa87]
                    .into_iter()
                    .find_map(|a| PublicKey::from_pem(a, &text).ok())
                    .ok_or_else(|| anyhow!("not a supported public key PEM (expected a PUBLIC KEY or RSA PUBLIC KEY block of RSA >= 2048 bits, P-256/384/521, Ed25519 or ML-DSA-44/65/87)"))?,
            };
            let kid = kid.unwrap_or_else(|| key.thumbprint());
            outln!(
                "{}",
                serde_json::to_string_pretty(&key.to_jwk(Some(kid)).to_value())?
            );
        }
    }
    Ok(())
}

/// What to say when `jwk to-pem` is given a JWK Set: how many keys, their
/// kids, and how to pick one.
fn key_set_hint(text: &str, file: Option<&std::path::Path>) -> String {
    let keys = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["keys"].as_array().cloned())
        .unwrap_or_default();
    let kids: Vec<String> = keys
        .iter()
        .map(|k| {
            k["kid"]
                .as_str()
                .map_or("(no kid)".into(), |k| format!("{k:?}"))
        })
        .take(10)
        .collect();
    let kid = keys.iter().find_map(|k| k["kid"].as_str()).unwrap_or("KID");
    let src = file.map_or("FILE".into(), |f| f.display().to_string());
    format!(
        "the input is a JWK Set of {} key(s) (kids: {}), not a single JWK; pick one, e.g. jq '.keys[] | select(.kid == \"{kid}\")' {src} | keyward jwk to-pem",
        keys.len(),
        kids.join(", ")
    )
}
