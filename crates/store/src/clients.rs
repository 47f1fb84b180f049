//! OAuth 2.0 clients: who may ask the issuer for tokens, how they
//! authenticate, and what they may ask for.
//!
//! A client belongs to one environment; its id is unique within it (the
//! table's key is `(env, client_id)`). Only a hash of a client secret is
//! stored. Scopes are stored as one space-separated text (so a scope may not
//! contain white space, as in RFC 6749 §3.3); audiences and grant types as
//! JSON arrays.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor};

use crate::error::{is_unique_violation, StoreError};
use crate::records::Timestamp;
use crate::store::{get, Store, Tx};

/// How a client authenticates at the token endpoint (RFC 7591 names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` form parameters.
    ClientSecretPost,
    /// A JWT signed with the client's registered key (RFC 7523).
    PrivateKeyJwt,
    /// A client certificate from a trusted CA whose subject DN or SAN is
    /// the registered one (RFC 8705 §2.1).
    TlsClientAuth,
    /// A self-signed client certificate whose public key is in the
    /// client's registered JWK Set (`x5c`, RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
    /// A public client (RFC 6749 §2.1): no secret; it names itself with
    /// `client_id` and proves the authorization request with PKCE. Only
    /// the `authorization_code` and `refresh_token` grants.
    None,
}

impl ClientAuth {
    /// Every method, in a stable order.
    pub const ALL: [ClientAuth; 6] = [
        ClientAuth::ClientSecretBasic,
        ClientAuth::ClientSecretPost,
        ClientAuth::PrivateKeyJwt,
        ClientAuth::TlsClientAuth,
        ClientAuth::SelfSignedTlsClientAuth,
        ClientAuth::None,
    ];

    /// The RFC 7591 name (`"client_secret_basic"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::ClientSecretBasic => "client_secret_basic",
            ClientAuth::ClientSecretPost => "client_secret_post",
            ClientAuth::PrivateKeyJwt => "private_key_jwt",
            ClientAuth::TlsClientAuth => "tls_client_auth",
            ClientAuth::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
            ClientAuth::None => "none",
        }
    }

    /// True for the two methods that present a client certificate (RFC 8705).
    pub fn uses_certificate(self) -> bool {
        matches!(
            self,
            ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth
        )
    }

    /// True for the two methods that present a client secret.
    pub fn uses_secret(self) -> bool {
        match self {
            ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost => true,
            ClientAuth::PrivateKeyJwt
            | ClientAuth::TlsClientAuth
            | ClientAuth::SelfSignedTlsClientAuth
            | ClientAuth::None => false,
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientAuth {
    type Err = StoreError;

    /// Exactly one of the RFC 7591 names (case-sensitive).
    fn from_str(s: &str) -> Result<Self, StoreError> {
        ClientAuth::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| StoreError::Invalid {
                what: "client authentication method",
                reason: format!(
                    "{s:?} is not one of client_secret_basic, client_secret_post, private_key_jwt, tls_client_auth, self_signed_tls_client_auth, none"
                ),
            })
    }
}

/// Which name of a `tls_client_auth` client's certificate must match (RFC
/// 8705 §2.1.2: exactly one is registered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsName {
    /// `tls_client_auth_subject_dn`.
    SubjectDn,
    /// `tls_client_auth_san_dns`.
    SanDns,
    /// `tls_client_auth_san_uri`.
    SanUri,
    /// `tls_client_auth_san_ip`.
    SanIp,
    /// `tls_client_auth_san_email`.
    SanEmail,
}

impl TlsName {
    pub const ALL: [TlsName; 5] = [
        TlsName::SubjectDn,
        TlsName::SanDns,
        TlsName::SanUri,
        TlsName::SanIp,
        TlsName::SanEmail,
    ];

    /// As stored (`subject_dn`, `san_dns`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsName::SubjectDn => "subject_dn",
            TlsName::SanDns => "san_dns",
            TlsName::SanUri => "san_uri",
            TlsName::SanIp => "san_ip",
            TlsName::SanEmail => "san_email",
        }
    }

    /// The RFC 8705 client metadata name (`tls_client_auth_subject_dn`, ...).
    pub fn metadata_name(self) -> &'static str {
        match self {
            TlsName::SubjectDn => "tls_client_auth_subject_dn",
            TlsName::SanDns => "tls_client_auth_san_dns",
            TlsName::SanUri => "tls_client_auth_san_uri",
            TlsName::SanIp => "tls_client_auth_san_ip",
            TlsName::SanEmail => "tls_client_auth_san_email",
        }
    }
}

/// A client's mTLS registration (RFC 8705).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientMtls {
    /// For `tls_client_auth`: the certificate name that must match, and its value.
    pub subject: Option<(TlsName, String)>,
    /// `tls_client_certificate_bound_access_tokens`; `None`: bound when the
    /// client authenticates with a certificate.
    pub bound_tokens: Option<bool>,
}

impl ClientMtls {
    /// Whether the client's access tokens are bound to the certificate it
    /// presents.
    pub fn binds_tokens(&self, auth: ClientAuth) -> bool {
        self.bound_tokens.unwrap_or(auth.uses_certificate())
    }
}

/// What a client registers for browser logins (the authorization code
/// flow and RP-initiated logout).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientLogin {
    /// Where authorization responses may go: absolute URIs, each compared
    /// byte for byte with the request's `redirect_uri` (no wildcards).
    pub redirect_uris: Vec<String>,
    /// Where the browser may be sent after logout (exact match).
    pub post_logout_redirect_uris: Vec<String>,
    /// Consent is skipped: the operator's own application.
    pub first_party: bool,
    /// Its authorization requests must be pushed first (RFC 9126
    /// `require_pushed_authorization_requests`).
    pub require_par: bool,
}

/// A registered OAuth 2.0 client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub env: String,
    /// Unique within `env`.
    pub client_id: String,
    pub name: String,
    pub auth: ClientAuth,
    /// SHA-256 of the client secret (secrets are 256-bit random values, so
    /// a plain hash suffices); `None` for `private_key_jwt` clients.
    pub secret_hash: Option<Vec<u8>>,
    /// JWK Set JSON text of a `private_key_jwt` client's keys.
    pub jwks: Option<String>,
    /// Where a `private_key_jwt` client's JWK Set is fetched from.
    pub jwks_uri: Option<String>,
    /// Scopes the client may ask for. No entry may be empty or contain
    /// white space.
    pub scopes: Vec<String>,
    /// Audiences the client may ask for.
    pub audiences: Vec<String>,
    /// Grant types the client may use (`client_credentials`, `refresh_token`).
    pub grant_types: Vec<String>,
    /// Overrides the environment's access-token lifetime.
    pub access_token_ttl_secs: Option<i64>,
    /// Overrides the default refresh-token lifetime.
    pub refresh_token_ttl_secs: Option<i64>,
    /// Every token request must carry a DPoP proof (RFC 9449 §5.2), so its
    /// access tokens are always bound to a key.
    pub dpop_bound_access_tokens: bool,
    /// Its certificate name and token binding (RFC 8705).
    pub mtls: ClientMtls,
    /// Its redirect URIs and consent policy (authorization code flow).
    pub login: ClientLogin,
    /// Token exchange (RFC 8693): the trusted issuers (by issuer URL) whose
    /// tokens this client may present as `subject_token` or `actor_token`,
    /// besides its own environment's. Empty: its own environment's only.
    pub exchange_issuers: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const CLIENT_COLUMNS: &str = "env, client_id, name, auth, secret_hash, jwks, jwks_uri, scopes, \
     audiences, grant_types, access_token_ttl_secs, refresh_token_ttl_secs, created_at, updated_at, \
     dpop_bound_access_tokens, tls_subject_kind, tls_subject, tls_bound_tokens, redirect_uris, \
     post_logout_redirect_uris, first_party, exchange_issuers, require_par";

/// A client's list-valued fields as stored.
struct Encoded {
    scopes: String,
    audiences: String,
    grant_types: String,
    redirect_uris: String,
    post_logout_redirect_uris: String,
    exchange_issuers: String,
}

fn encode(client: &Client) -> Result<Encoded, StoreError> {
    for scope in &client.scopes {
        if scope.is_empty() || scope.chars().any(char::is_whitespace) {
            return Err(StoreError::Invalid {
                what: "scope",
                reason: format!(
                    "client {:?}: scope {scope:?} is empty or contains white space",
                    client.client_id
                ),
            });
        }
    }
    let json = |v: &Vec<String>| {
        serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
    };
    Ok(Encoded {
        scopes: client.scopes.join(" "),
        audiences: json(&client.audiences)?,
        grant_types: json(&client.grant_types)?,
        redirect_uris: json(&client.login.redirect_uris)?,
        post_logout_redirect_uris: json(&client.login.post_logout_redirect_uris)?,
        exchange_issuers: json(&client.exchange_issuers)?,
    })
}

fn client_from_row(row: &AnyRow) -> Result<Client, StoreError> {
    let env: String = get(row, "env")?;
    let client_id: String = get(row, "client_id")?;
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("client {env:?}/{client_id:?}: invalid {what}"));
    let auth: String = get(row, "auth")?;
    let auth = auth.parse().map_err(|_| corrupt("auth"))?;
    let scopes: String = get(row, "scopes")?;
    let list = |column: &'static str| -> Result<Vec<String>, StoreError> {
        let text: String = get(row, column)?;
        serde_json::from_str(&text).map_err(|_| corrupt(column))
    };
    Ok(Client {
        name: get(row, "name")?,
        auth,
        secret_hash: get(row, "secret_hash")?,
        jwks: get(row, "jwks")?,
        jwks_uri: get(row, "jwks_uri")?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        audiences: list("audiences")?,
        grant_types: list("grant_types")?,
        access_token_ttl_secs: get(row, "access_token_ttl_secs")?,
        refresh_token_ttl_secs: get(row, "refresh_token_ttl_secs")?,
        dpop_bound_access_tokens: get::<i64>(row, "dpop_bound_access_tokens")? != 0,
        mtls: ClientMtls {
            subject: match (
                get::<Option<String>>(row, "tls_subject_kind")?,
                get::<Option<String>>(row, "tls_subject")?,
            ) {
                (None, None) => None,
                (Some(kind), Some(value)) => Some((
                    TlsName::ALL
                        .into_iter()
                        .find(|n| n.as_str() == kind)
                        .ok_or_else(|| corrupt("tls_subject_kind"))?,
                    value,
                )),
                _ => return Err(corrupt("tls_subject")),
            },
            bound_tokens: match get::<Option<i64>>(row, "tls_bound_tokens")? {
                None => None,
                Some(0) => Some(false),
                Some(1) => Some(true),
                Some(_) => return Err(corrupt("tls_bound_tokens")),
            },
        },
        login: ClientLogin {
            redirect_uris: list("redirect_uris")?,
            post_logout_redirect_uris: list("post_logout_redirect_uris")?,
            first_party: get::<i64>(row, "first_party")? != 0,
            require_par: get::<i64>(row, "require_par")? != 0,
        },
        exchange_issuers: list("exchange_issuers")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        env,
        client_id,
    })
}

fn client_not_found(env: &str, client_id: &str) -> StoreError {
    StoreError::NotFound {
        what: "client",
        name: format!("{env}/{client_id}"),
    }
}

async fn fetch_client<'c, E>(ex: E, env: &str, client_id: &str) -> Result<Client, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE env = $1 AND client_id = $2");
    let row = sqlx::query(&sql)
        .bind(env.to_owned())
        .bind(client_id.to_owned())
        .fetch_optional(ex)
        .await?
        .ok_or_else(|| client_not_found(env, client_id))?;
    client_from_row(&row)
}

impl Store {
    /// One client; `NotFound` (what: `"client"`, name: `env/client_id`) if
    /// there is none.
    pub async fn client(&self, env: &str, client_id: &str) -> Result<Client, StoreError> {
        fetch_client(&self.pool, env, client_id).await
    }

    /// The clients of `env`, by client id; `NotFound` if the environment
    /// does not exist.
    pub async fn clients(&self, env: &str) -> Result<Vec<Client>, StoreError> {
        // One statement, so the existence check and the listing agree (as
        // for keys): a LEFT JOIN yields one all-NULL row for an empty env.
        let sql = format!(
            "SELECT e.name AS env_name, {} FROM environments e \
             LEFT JOIN clients c ON c.env = e.name WHERE e.name = $1 ORDER BY c.client_id",
            CLIENT_COLUMNS
                .split(", ")
                .map(|c| format!("c.{c} AS {c}", c = c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(env.to_owned())
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound {
                what: "environment",
                name: env.to_owned(),
            });
        }
        let mut clients = Vec::with_capacity(rows.len());
        for row in &rows {
            if get::<Option<String>>(row, "client_id")?.is_some() {
                clients.push(client_from_row(row)?);
            }
        }
        Ok(clients)
    }

    /// Every client of every environment, by environment then client id.
    pub async fn all_clients(&self) -> Result<Vec<Client>, StoreError> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY env, client_id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(client_from_row).collect()
    }
}

impl Tx<'_> {
    /// The ids of `env`'s clients, as this transaction sees them.
    pub async fn client_ids(&mut self, env: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT client_id FROM clients WHERE env = $1 ORDER BY client_id")
            .bind(env.to_owned())
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|r| get(r, "client_id")).collect()
    }

    /// One client, as this transaction sees it; `NotFound` if absent.
    pub async fn client(&mut self, env: &str, client_id: &str) -> Result<Client, StoreError> {
        fetch_client(&mut *self.tx, env, client_id).await
    }

    /// Registers a client. `NotFound` if its environment does not exist,
    /// `Conflict` if the environment already has a client by that id,
    /// `Invalid` for a scope that is empty or contains white space.
    pub async fn create_client(&mut self, client: &Client) -> Result<(), StoreError> {
        let encoded = encode(client)?;
        self.writer_lock().await?;
        self.environment(&client.env).await?;
        let conflict = || StoreError::Conflict {
            what: "client",
            name: format!("{}/{}", client.env, client.client_id),
        };
        let exists = sqlx::query("SELECT 1 AS one FROM clients WHERE env = $1 AND client_id = $2")
            .bind(client.env.clone())
            .bind(client.client_id.clone())
            .fetch_optional(&mut *self.tx)
            .await?;
        if exists.is_some() {
            return Err(conflict());
        }
        let sql = format!(
            "INSERT INTO clients ({CLIENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             $19, $20, $21, $22, $23)"
        );
        sqlx::query(&sql)
            .bind(client.env.clone())
            .bind(client.client_id.clone())
            .bind(client.name.clone())
            .bind(client.auth.as_str())
            .bind(client.secret_hash.clone())
            .bind(client.jwks.clone())
            .bind(client.jwks_uri.clone())
            .bind(encoded.scopes)
            .bind(encoded.audiences)
            .bind(encoded.grant_types)
            .bind(client.access_token_ttl_secs)
            .bind(client.refresh_token_ttl_secs)
            .bind(client.created_at)
            .bind(client.updated_at)
            .bind(i64::from(client.dpop_bound_access_tokens))
            .bind(client.mtls.subject.as_ref().map(|(k, _)| k.as_str()))
            .bind(client.mtls.subject.as_ref().map(|(_, v)| v.clone()))
            .bind(client.mtls.bound_tokens.map(i64::from))
            .bind(encoded.redirect_uris)
            .bind(encoded.post_logout_redirect_uris)
            .bind(i64::from(client.login.first_party))
            .bind(encoded.exchange_issuers)
            .bind(i64::from(client.login.require_par))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    conflict()
                } else {
                    e.into()
                }
            })?;
        self.bump_generation().await
    }

    /// Writes every field of an existing client (matched by `env` and
    /// `client_id`) except `created_at`; `NotFound` if absent, `Invalid` as
    /// for [`Tx::create_client`].
    pub async fn update_client(&mut self, client: &Client) -> Result<(), StoreError> {
        let encoded = encode(client)?;
        self.writer_lock().await?;
        let done = sqlx::query(
            "UPDATE clients SET name = $1, auth = $2, secret_hash = $3, jwks = $4, jwks_uri = $5, \
             scopes = $6, audiences = $7, grant_types = $8, access_token_ttl_secs = $9, \
             refresh_token_ttl_secs = $10, updated_at = $11, tls_subject_kind = $12, \
             tls_subject = $13, tls_bound_tokens = $14, dpop_bound_access_tokens = $17, \
             redirect_uris = $18, post_logout_redirect_uris = $19, first_party = $20, \
             exchange_issuers = $21, require_par = $22 WHERE env = $15 AND client_id = $16",
        )
        .bind(client.name.clone())
        .bind(client.auth.as_str())
        .bind(client.secret_hash.clone())
        .bind(client.jwks.clone())
        .bind(client.jwks_uri.clone())
        .bind(encoded.scopes)
        .bind(encoded.audiences)
        .bind(encoded.grant_types)
        .bind(client.access_token_ttl_secs)
        .bind(client.refresh_token_ttl_secs)
        .bind(client.updated_at)
        .bind(client.mtls.subject.as_ref().map(|(k, _)| k.as_str()))
        .bind(client.mtls.subject.as_ref().map(|(_, v)| v.clone()))
        .bind(client.mtls.bound_tokens.map(i64::from))
        .bind(client.env.clone())
        .bind(client.client_id.clone())
        .bind(i64::from(client.dpop_bound_access_tokens))
        .bind(encoded.redirect_uris)
        .bind(encoded.post_logout_redirect_uris)
        .bind(i64::from(client.login.first_party))
        .bind(encoded.exchange_issuers)
        .bind(i64::from(client.login.require_par))
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(client_not_found(&client.env, &client.client_id));
        }
        self.bump_generation().await
    }

    /// Deletes a client together with its refresh tokens and the assertion
    /// jtis recorded for it; `NotFound` if absent. (Revoked access-token
    /// jtis stay in the revocation feed until they expire.) Call
    /// [`Tx::revoke_client_refresh_families`] first in the same transaction:
    /// the deleted rows are the only record of the access tokens issued with
    /// its refresh tokens, which that puts on the revocation feed.
    pub async fn delete_client(&mut self, env: &str, client_id: &str) -> Result<(), StoreError> {
        self.writer_lock().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM clients WHERE env = $1 AND client_id = $2")
            .bind(env.to_owned())
            .bind(client_id.to_owned())
            .fetch_optional(&mut *self.tx)
            .await?;
        if exists.is_none() {
            return Err(client_not_found(env, client_id));
        }
        for table in [
            "refresh_tokens",
            "assertion_jtis",
            "authorization_codes",
            "login_requests",
            "consents",
            "pushed_requests",
            "device_authorizations",
            "clients",
        ] {
            let sql = format!("DELETE FROM {table} WHERE env = $1 AND client_id = $2");
            sqlx::query(&sql)
                .bind(env.to_owned())
                .bind(client_id.to_owned())
                .execute(&mut *self.tx)
                .await?;
        }
        self.bump_generation().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_names_round_trip() {
        for m in ClientAuth::ALL {
            assert_eq!(m.as_str().parse::<ClientAuth>().unwrap(), m);
            assert_eq!(m.to_string(), m.as_str());
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<ClientAuth>(&json).unwrap(), m);
        }
        assert_eq!(
            "private_key_jwt".parse::<ClientAuth>().unwrap(),
            ClientAuth::PrivateKeyJwt
        );
        for bad in ["", "Client_Secret_Basic", "None", "client_secret_jwt"] {
            let err = bad.parse::<ClientAuth>().unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Invalid {
                        what: "client authentication method",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
        assert!(ClientAuth::ClientSecretPost.uses_secret());
        assert!(!ClientAuth::PrivateKeyJwt.uses_secret());
    }
}
