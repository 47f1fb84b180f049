//! `keyward jwk`: public key format conversion.

use crate::output::{out, outln};
use anyhow::{anyhow, Result};
use keyward_jose::{Algorithm, Jwk, PublicKey};

use crate::args::JwkCmd;
use crate::context::read_input;

pub fn run(cmd: JwkCmd) -> Result<()> {
    match cmd {
        JwkCmd::ToPem { file } => {
            let text = read_input(file.as_deref())?;
            let jwk = Jwk::parse(text.trim().as_bytes(), Algorithm::RS256)?;
            out!("{}", jwk.key.to_pem());
        }
        JwkCmd::FromPem { file, alg, kid } => {
            let text = read_input(file.as_deref())?;
            let key = match alg {
                Some(a) => PublicKey::from_pem(a, &text)?,
                None => [Algorithm::ES256, Algorithm::ES384, Algorithm::ES512, Algorithm::EdDSA, Algorithm::RS256]
                    .into_iter()
                    .find_map(|a| PublicKey::from_pem(a, &text).ok())
                    .ok_or_else(|| anyhow!("not a supported public key PEM (expected a PUBLIC KEY or RSA PUBLIC KEY block of RSA >= 2048 bits, P-256/384/521 or Ed25519)"))?,
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
