//! Fetching a client's JWK Set from its `jwks_uri`, bounded in time and size.

use std::time::Duration;

use crate::error::IssuerError;

/// Largest JWK Set accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// GETs `uri` with a 5 s timeout and a size bound.
pub async fn fetch_jwks(uri: &str) -> Result<Vec<u8>, IssuerError> {
    let fail = |what: &str| IssuerError::Unavailable(format!("cannot fetch {uri}: {what}"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|_| fail("no HTTP client"))?;
    let mut resp = client
        .get(uri)
        .send()
        .await
        .map_err(|_| fail("request failed"))?
        .error_for_status()
        .map_err(|_| fail("error status"))?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| fail("body"))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            return Err(fail("too large"));
        }
    }
    Ok(body)
}
