//! `keyward clients` and `keyward admin-token`.

use crate::output::outln;
use anyhow::{bail, Context as _, Result};
use keyward_issuer::admin::tokens::{
    admin_token_json, create_admin_token, revoke_admin_token, NewAdminToken,
};
use keyward_issuer::clients::{self, NewClient};
use keyward_issuer::fmt_time;
use keyward_issuer::views::client_json;
use keyward_store::{Client, ClientAuth};
use serde_json::{json, Value};

use crate::args::{AdminTokenCmd, AuthMethod, ClientFields, ClientsCmd};
use crate::context::Context;
use crate::output::{print_json, table};

fn words(s: &str) -> Vec<String> {
    keyward_issuer::tokens::parse_scope(s)
}

fn auth(a: AuthMethod) -> ClientAuth {
    match a {
        AuthMethod::ClientSecretBasic => ClientAuth::ClientSecretBasic,
        AuthMethod::ClientSecretPost => ClientAuth::ClientSecretPost,
        AuthMethod::PrivateKeyJwt => ClientAuth::PrivateKeyJwt,
        AuthMethod::TlsClientAuth => ClientAuth::TlsClientAuth,
        AuthMethod::SelfSignedTlsClientAuth => ClientAuth::SelfSignedTlsClientAuth,
    }
}

/// `--jwks FILE_OR_URL` to (jwks, jwks_uri).
fn jwks_source(v: Option<&str>) -> Result<(Option<String>, Option<String>)> {
    match v {
        None => Ok((None, None)),
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
            Ok((None, Some(u.to_string())))
        }
        Some(f) => Ok((
            Some(std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?),
            None,
        )),
    }
}

pub async fn run(ctx: &Context, cmd: ClientsCmd) -> Result<()> {
    let store = ctx.store().await?;
    match cmd {
        ClientsCmd::Create {
            env,
            name,
            auth: method,
            fields,
            public,
            json,
        } => {
            let (jwks, jwks_uri) = jwks_source(fields.jwks.as_deref())?;
            let tls_subject = fields.tls_subject();
            if method == AuthMethod::SelfSignedTlsClientAuth && jwks_uri.is_some() {
                bail!("self_signed_tls_client_auth takes --jwks as a file (a JWK Set with x5c)");
            }
            let reg = clients::create_client(
                &store,
                NewClient {
                    env,
                    name,
                    auth: if public {
                        ClientAuth::None
                    } else {
                        auth(method)
                    },
                    scopes: words(fields.scopes.as_deref().unwrap_or("")),
                    audiences: fields.audience.clone(),
                    grant_types: grant_types(&fields, public),
                    login: keyward_store::ClientLogin {
                        redirect_uris: fields.redirect_uri.clone(),
                        post_logout_redirect_uris: fields.post_logout_redirect_uri.clone(),
                        first_party: fields.first_party.unwrap_or(false),
                    },
                    jwks,
                    jwks_uri,
                    access_token_ttl_secs: fields.access_token_ttl,
                    refresh_token_ttl_secs: fields.refresh_token_ttl,
                    dpop_bound_access_tokens: fields.dpop_bound.unwrap_or(false),
                    exchange_issuers: fields.exchange_issuer,
                    mtls: keyward_store::ClientMtls {
                        subject: tls_subject,
                        bound_tokens: fields.tls_bound_tokens,
                    },
                },
                ctx.at(),
            )
            .await?;
            if reg.secret.is_some() {
                crate::output::shown_once("the client secret");
            }
            if json {
                let mut v = client_json(&reg.client);
                v["client_secret"] = json!(reg.secret);
                print_json(&v);
            } else {
                outln!("client_id:     {}", reg.client.client_id);
                if let Some(s) = reg.secret {
                    outln!("client_secret: {s}");
                    outln!("(the secret is shown once; keyward stores only its hash)");
                }
            }
        }
        ClientsCmd::List { env, json } => {
            store.environment(&env).await?;
            let list = store.clients(&env).await?;
            if json {
                print_json(&Value::Array(list.iter().map(client_json).collect()));
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.client_id.clone(),
                            c.name.clone(),
                            c.auth.as_str().to_string(),
                            c.scopes.join(" "),
                            c.audiences.join(" "),
                        ]
                    })
                    .collect();
                table(&["CLIENT_ID", "NAME", "AUTH", "SCOPES", "AUDIENCES"], &rows);
            }
        }
        ClientsCmd::Update {
            env,
            client_id,
            name,
            fields,
            json,
        } => {
            let mut c = store.client(&env, &client_id).await?;
            apply(&mut c, name, fields)?;
            let c = clients::update_client(&store, c, ctx.at()).await?;
            if json {
                print_json(&client_json(&c));
            } else {
                outln!("updated client {client_id}");
            }
        }
        ClientsCmd::Delete { env, client_id } => {
            clients::delete_client(&store, &env, &client_id, ctx.at()).await?;
            outln!("deleted client {client_id} and its refresh tokens");
        }
        ClientsCmd::RotateSecret {
            env,
            client_id,
            json,
        } => {
            let secret = clients::rotate_secret(&store, &env, &client_id, ctx.at()).await?;
            crate::output::shown_once("the new client secret");
            if json {
                print_json(&json!({"client_id": client_id, "client_secret": secret}));
            } else {
                outln!("client_secret: {secret}");
                outln!("(the old secret no longer works; this one is shown once)");
            }
        }
    }
    Ok(())
}

/// The grant types asked for: `--grant-types` and each `--grant-type`;
/// none given: client_credentials and refresh_token (a public client:
/// authorization_code and refresh_token).
fn grant_types(f: &ClientFields, public: bool) -> Vec<String> {
    let mut g = f.grant_types.as_deref().map(words).unwrap_or_default();
    for one in &f.grant_type {
        if !g.contains(one) {
            g.push(one.clone());
        }
    }
    if g.is_empty() {
        g = words(if public {
            "authorization_code refresh_token"
        } else {
            "client_credentials refresh_token"
        });
    }
    g
}

fn apply(c: &mut Client, name: Option<String>, f: ClientFields) -> Result<()> {
    let tls_subject = f.tls_subject();
    if f.grant_types.is_some() || !f.grant_type.is_empty() {
        c.grant_types = grant_types(&f, false);
    }
    if !f.redirect_uri.is_empty() {
        c.login.redirect_uris = f.redirect_uri.clone();
    }
    if !f.post_logout_redirect_uri.is_empty() {
        c.login.post_logout_redirect_uris = f.post_logout_redirect_uri.clone();
    }
    if let Some(b) = f.first_party {
        c.login.first_party = b;
    }
    if let Some(n) = name {
        c.name = n;
    }
    if let Some(s) = f.scopes {
        c.scopes = words(&s);
    }
    if !f.audience.is_empty() {
        c.audiences = f.audience;
    }
    if f.access_token_ttl.is_some() {
        c.access_token_ttl_secs = f.access_token_ttl;
    }
    if f.refresh_token_ttl.is_some() {
        c.refresh_token_ttl_secs = f.refresh_token_ttl;
    }
    if let Some(b) = f.dpop_bound {
        c.dpop_bound_access_tokens = b;
    }
    if !f.exchange_issuer.is_empty() || f.no_exchange_issuers {
        c.exchange_issuers = f.exchange_issuer;
    }
    if let Some(subject) = tls_subject {
        c.mtls.subject = Some(subject);
    }
    if f.tls_bound_tokens.is_some() {
        c.mtls.bound_tokens = f.tls_bound_tokens;
    }
    if let Some(j) = f.jwks.as_deref() {
        if !matches!(
            c.auth,
            ClientAuth::PrivateKeyJwt | ClientAuth::SelfSignedTlsClientAuth
        ) {
            bail!("--jwks applies to private_key_jwt and self_signed_tls_client_auth clients only");
        }
        (c.jwks, c.jwks_uri) = jwks_source(Some(j))?;
    }
    Ok(())
}

pub async fn admin_token(ctx: &Context, cmd: AdminTokenCmd) -> Result<()> {
    let store = ctx.store().await?;
    let at = ctx.at();
    match cmd {
        AdminTokenCmd::Create {
            name,
            permissions,
            ttl,
            owner,
            json,
        } => {
            let permissions: Vec<String> = permissions
                .split([' ', ','])
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            let expires_at = match ttl.as_str() {
                "never" => None,
                t => {
                    let secs = crate::args::parse_duration(t)
                        .map_err(|e| anyhow::anyhow!("--ttl: {e}, or `never`"))?;
                    if secs < 1 {
                        bail!("--ttl must be at least 1s");
                    }
                    Some(at.now.saturating_add(secs))
                }
            };
            let (t, token) = create_admin_token(
                &store,
                NewAdminToken {
                    name,
                    owner,
                    permissions,
                    expires_at,
                },
                at,
            )
            .await?;
            if t.permissions.iter().any(|p| p == "*") {
                eprintln!("note: this token holds every permission (*); limit it with --permissions (see `keyward admin-token create --help`)");
            }
            if t.expires_at.is_none() {
                eprintln!("note: this token never expires; limit it with --ttl (e.g. --ttl 8h)");
            }
            crate::output::shown_once("the admin token");
            if json {
                let mut v = admin_token_json(&t);
                v["token"] = json!(token);
                print_json(&v);
            } else {
                outln!("admin token {} ({}):", t.id, t.name);
                outln!("{token}");
                outln!("(shown once; keyward stores only its hash. Send it as `Authorization: Bearer <token>` to /admin/v1/)");
            }
        }
        AdminTokenCmd::List { json } => {
            let list = store.admin_tokens().await?;
            if json {
                print_json(&list.iter().map(admin_token_json).collect());
            } else {
                let now = at.now;
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        let state = match (t.revoked_at, t.expires_at) {
                            (Some(r), _) => format!("revoked {}", fmt_time(r)),
                            (None, Some(e)) if e <= now => format!("expired {}", fmt_time(e)),
                            (None, Some(e)) => format!("until {}", fmt_time(e)),
                            (None, None) => "no expiry".into(),
                        };
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.owner.clone().unwrap_or_else(|| "-".into()),
                            t.permissions.join(" "),
                            fmt_time(t.created_at),
                            state,
                        ]
                    })
                    .collect();
                table(
                    &["ID", "NAME", "OWNER", "PERMISSIONS", "CREATED", "STATE"],
                    &rows,
                );
            }
        }
        AdminTokenCmd::Revoke { id } => {
            if !revoke_admin_token(&store, &id, at).await? {
                bail!("admin token {id} is already revoked");
            }
            outln!("admin token {id} revoked");
        }
    }
    Ok(())
}
