//! The admin API's OpenAPI 3.1 document, served at `/admin/v1/openapi.json`:
//! every route, its parameters, bodies, answers and errors, and the
//! permission it requires (`x-keyward-permission`, from [`super::ROUTES`],
//! also said in its description).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use keyward_store::ClientAuth;

use super::{Need, MAX_LEAD_SECS, MAX_REASON_LEN, ROUTES};

pub(super) async fn openapi_json() -> Response {
    let mut r = axum::Json(openapi()).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn err_responses(codes: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    for c in codes {
        let name = match *c {
            "400" => "BadRequest",
            "401" => "Unauthorized",
            "403" => "Forbidden",
            "404" => "NotFound",
            "409" => "Conflict",
            "413" => "TooLarge",
            "410" => "Gone",
            "415" => "NotJson",
            "503" => "Unavailable",
            _ => "ServerError",
        };
        m.insert(
            c.to_string(),
            json!({"$ref": format!("#/components/responses/{name}")}),
        );
    }
    m
}

fn op(
    id: &str,
    summary: &str,
    params: &[&str],
    body: Option<(&str, bool)>,
    ok: (&str, Option<&str>),
    errors: &[&str],
) -> Value {
    let mut responses = Map::new();
    let (status, schema) = ok;
    let mut success = json!({"description": "success"});
    if let Some(s) = schema {
        success["content"] =
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}});
    }
    responses.insert(status.to_string(), success);
    let mut all = vec!["401", "403", "500"];
    if body.is_some() {
        all.extend(["400", "413", "415"]);
    }
    all.extend(errors);
    responses.extend(err_responses(&all));
    let mut o = json!({
        "operationId": id,
        "summary": summary,
        "parameters": params.iter().map(|p| json!({"$ref": format!("#/components/parameters/{p}")})).collect::<Vec<_>>(),
        "responses": responses,
    });
    if let Some((schema, required)) = body {
        o["requestBody"] = json!({
            "required": required,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}},
        });
    }
    o
}

/// The OpenAPI 3.1 document of the admin API (served at
/// `/admin/v1/openapi.json`).
pub fn openapi() -> Value {
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let path_param = |name: &str, d: &str| json!({"name": name, "in": "path", "required": true, "description": d, "schema": {"type": "string"}});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "keyward admin API",
            "version": "1",
            "description": "Manage keyward's environments, signing keys and OAuth clients, and mint tokens for users a login service authenticated. Every operation but this document needs `Authorization: Bearer <token>`: an admin token (`keyward admin-token create`) or, where the server trusts one, an access token of the company's SSO. Each operation requires one permission, stated in its description and in `x-keyward-permission` (`{env}` is the environment's name; a grant ending in `.*` covers a group, a bare `*` everything); without it the answer is 403 `insufficient_scope` naming the permission. Every change is recorded in the audit chain as `admin:<token id>` (or `sso:<subject>`), every refusal as `admin.denied`; a change takes effect at once on the server that made it, and within the reload interval on the others. Errors are `{\"error\": code, \"error_description\": text}`."
        },
        "servers": [{"url": "/"}],
        "security": [{"adminToken": []}],
        "tags": [
            {"name": "environments"}, {"name": "keys"}, {"name": "clients"}, {"name": "tokens"}, {"name": "logins"}, {"name": "admin-tokens"}, {"name": "audit"}, {"name": "meta"}
        ],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "An admin token from `keyward admin-token create` (`kwa_...`), or an access token of the SSO issuer the server trusts (`[admin] trusted_issuer`), whose `permissions` claim holds its grants."}
            },
            "parameters": {
                "env": path_param("env", "environment name"),
                "kid": path_param("kid", "key id"),
                "client_id": path_param("client_id", "client id"),
                "id": path_param("id", "admin token id"),
                "challenge": path_param("challenge", "the login_challenge or consent_challenge keyward sent the browser with"),
            },
            "responses": {
                "BadRequest": err("the request is malformed or a value is not accepted (`invalid_request`, or for minting `invalid_scope`/`invalid_target`); nothing changed"),
                "Unauthorized": {
                    "description": "no valid admin token (`unauthorized`)",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer realm=\"keyward-admin\""}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                },
                "Forbidden": {
                    "description": "the caller lacks the permission (`insufficient_scope`); `permission` names it; the refusal is audited and nothing changed",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer realm=\"keyward-admin\", error=\"insufficient_scope\", error_description=\"...\", scope=\"<permission>\""}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                },
                "NotFound": err("unknown environment, key or client (`not_found`); nothing changed"),
                "Conflict": err("the request conflicts with the current state (`conflict`); nothing changed"),
                "Gone": err("the login or consent challenge expired (`expired`); nothing changed"),
                "TooLarge": err("the body is larger than 64 KiB"),
                "NotJson": err("the body is not application/json"),
                "Unavailable": err("the environment has no signing key now, or (key rotation) this server cannot seal under the store's root key yet (`temporarily_unavailable`); nothing changed"),
                "ServerError": err("a server-side failure (`server_error`); the cause is logged, not sent"),
            },
            "schemas": schemas(),
        }
    })
}

/// The paths, each operation stating the permission [`ROUTES`] gives it.
fn paths() -> Value {
    let mut paths = described_paths();
    for r in ROUTES {
        let op = &mut paths[r.path][r.method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is routed but not described",
            r.method,
            r.path
        );
        let text = match (r.need.permission_text(), r.need.env_from()) {
            (None, _) => "Requires no permission.".to_string(),
            (Some(p), None) => format!("Requires `{p}`."),
            (Some(p), Some(env)) => format!("Requires `{p}` ({env})."),
        };
        op["x-keyward-permission"] = match r.need {
            Need::Public => Value::Null,
            need => json!(need.permission_text()),
        };
        op["description"] = json!(text);
    }
    paths
}

fn described_paths() -> Value {
    json!({
        "/admin/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "tags": ["meta"],
                "summary": "This document (no authentication).",
                "security": [],
                "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }
        },
        "/admin/v1/envs": {
            "get": with_tag(op("listEnvironments", "List environments.", &[], None, ("200", Some("EnvironmentList")), &[]), "environments"),
            "post": with_tag(op("createEnvironment", "Create an environment with its first key (the policy's algorithm and size), active at once, in one transaction. With `first_key: false` it has no key until one is made with rotate; servers report it and do not count it against readiness. 409 when the name or the issuer URL (same host and path) is taken, or when the issuer URL lies under another environment's endpoints (or theirs under its).", &[], Some(("NewEnvironment", true)), ("201", Some("NewEnvironmentCreated")), &["409"]), "environments"),
        },
        "/admin/v1/envs/{env}": {
            "get": with_tag(op("getEnvironment", "Show an environment.", &["env"], None, ("200", Some("Environment")), &["404"]), "environments"),
            "patch": with_tag(op("updateEnvironment", "Change where the environment's new keys are made (`key_store`); existing keys keep their store. Audited as `env.update`. 400 when the store is not configured on this server.", &["env"], Some(("EnvironmentUpdate", true)), ("200", Some("Environment")), &["400", "404"]), "environments"),
            "delete": with_tag({
                let mut o = op("deleteEnvironment", "Delete an environment with its keys, clients and tokens (audited; the audit chain keeps its records). Refused (409) while it publishes keys or has clients, unless `force=true`.", &["env"], None, ("200", Some("DeletedEnvironment")), &["400", "404", "409"]);
                o["parameters"].as_array_mut().expect("parameters").push(json!({
                    "name": "force", "in": "query", "required": false,
                    "schema": {"type": "boolean", "default": false},
                    "description": "delete even while keys are published or clients exist"
                }));
                o
            }, "environments"),
        },
        "/admin/v1/envs/{env}/keys": {
            "get": with_tag(op("listKeys", "List an environment's keys with their state now.", &["env"], None, ("200", Some("KeyList")), &["404"]), "keys"),
        },
        "/admin/v1/envs/{env}/keys/rotate": {
            "post": with_tag(op("rotateKey", "Generate a key with the environment's policy (algorithm, size), or with the `alg` and `rsa_bits` given, which the policy then takes in the same transaction. By default it is published now and signs after the lead time; `immediate` makes it sign now. Refused (409) while a rotation is pending, unless immediate. 503 while this server does not hold the store's root key (after `keyward root-key rotate`, until its root key source gives the new key): retry on another replica or later.", &["env"], Some(("RotateRequest", false)), ("201", Some("RotatedKey")), &["400", "404", "409", "503"]), "keys"),
        },
        "/admin/v1/keys/{kid}/retire": {
            "post": with_tag(op("retireKey", "Retire a key now: it stops signing and stays published until its tokens expired. Retiring the only key that signs now (a pending successor does not sign yet) is refused (409, saying to rotate with immediate or when the successor activates) unless `force` and `accept_outage` are both true; retiring the last key that could ever sign needs `force`.", &["kid"], Some(("RetireRequest", false)), ("200", Some("Key")), &["404", "409"]), "keys"),
        },
        "/admin/v1/keys/{kid}/revoke": {
            "post": with_tag(op("revokeKey", "Revoke a key now: unpublished at once.", &["kid"], Some(("RevokeRequest", false)), ("200", Some("RevokedKey")), &["404", "409"]), "keys"),
        },
        "/admin/v1/envs/{env}/clients": {
            "get": with_tag(op("listClients", "List an environment's clients.", &["env"], None, ("200", Some("ClientList")), &["404"]), "clients"),
            "post": with_tag(op("createClient", "Register a client. For secret clients the response carries `client_secret`, shown once (only its hash is stored).", &["env"], Some(("NewClient", true)), ("201", Some("ClientWithSecret")), &["404", "409"]), "clients"),
        },
        "/admin/v1/envs/{env}/clients/{client_id}": {
            "get": with_tag(op("getClient", "Show a client.", &["env", "client_id"], None, ("200", Some("Client")), &["404"]), "clients"),
            "patch": with_tag(op("updateClient", "Change a client's registration. Absent fields stay as they are; `null` clears a lifetime override or a key source.", &["env", "client_id"], Some(("ClientPatch", true)), ("200", Some("Client")), &["404"]), "clients"),
            "delete": with_tag(op("deleteClient", "Delete a client and its refresh tokens; the access tokens issued with them go on the revocation feed.", &["env", "client_id"], None, ("204", None), &["404"]), "clients"),
        },
        "/admin/v1/envs/{env}/clients/{client_id}/rotate-secret": {
            "post": with_tag(op("rotateClientSecret", "Replace a client's secret; the old one stops working at once. The new secret is shown once.", &["env", "client_id"], None, ("200", Some("ClientSecret")), &["400", "404", "409"]), "clients"),
        },
        "/admin/v1/envs/{env}/tokens": {
            "post": with_tag(op("mintToken", "Mint an access token (and by default a refresh token) for a user the caller authenticated, on behalf of a registered client, with optional roles and permissions claims.", &["env"], Some(("MintRequest", true)), ("200", Some("TokenResponse")), &["404", "503"]), "tokens"),
        },
        "/admin/v1/envs/{env}/login-requests/{challenge}": {
            "get": with_tag(op("getLoginRequest", "Read a login request: the client, the requested scopes, `login_hint`, `prompt`, `max_age`, and `skip` (the browser session already has a login that satisfies them; `subject` names it: accept with that subject without asking). 404 unknown, 409 decided already, 410 expired (10 minutes).", &["env", "challenge"], None, ("200", Some("LoginRequest")), &["404", "409", "410"]), "logins"),
        },
        "/admin/v1/envs/{env}/login-requests/{challenge}/accept": {
            "post": with_tag(op("acceptLogin", "Accept a login request once, for `subject`; `claims` are what userinfo returns (filtered by the granted scope). Audited as `login.accept`. Send the browser to `redirect_to`; it works only in the browser session that started the flow.", &["env", "challenge"], Some(("LoginAccept", true)), ("200", Some("RedirectTo")), &["404", "409", "410"]), "logins"),
        },
        "/admin/v1/envs/{env}/login-requests/{challenge}/reject": {
            "post": with_tag(op("rejectLogin", "Reject a login request once (`error` is sent to the client, e.g. access_denied). Audited as `login.reject`.", &["env", "challenge"], Some(("Reject", true)), ("200", Some("RedirectTo")), &["404", "409", "410"]), "logins"),
        },
        "/admin/v1/envs/{env}/consent-requests/{challenge}": {
            "get": with_tag(op("getConsentRequest", "Read a consent request: the client, the subject, the requested scopes.", &["env", "challenge"], None, ("200", Some("ConsentRequest")), &["404", "409", "410"]), "logins"),
        },
        "/admin/v1/envs/{env}/consent-requests/{challenge}/accept": {
            "post": with_tag(op("acceptConsent", "Grant some or all of the requested scopes, once; `remember` skips consent for this subject, client and scopes later. Audited as `consent.grant`.", &["env", "challenge"], Some(("ConsentAccept", true)), ("200", Some("RedirectTo")), &["404", "409", "410"]), "logins"),
        },
        "/admin/v1/envs/{env}/consent-requests/{challenge}/reject": {
            "post": with_tag(op("rejectConsent", "Refuse consent, once (`error` is sent to the client). Audited as `consent.reject`.", &["env", "challenge"], Some(("Reject", true)), ("200", Some("RedirectTo")), &["404", "409", "410"]), "logins"),
        },
        "/admin/v1/admin-tokens": {
            "get": with_tag(op("listAdminTokens", "List admin tokens, revoked and expired ones included (never their values or hashes).", &[], None, ("200", Some("AdminTokenList")), &[]), "admin-tokens"),
            "post": with_tag(op("createAdminToken", "Create an admin token holding at most what the caller holds (403 naming the first grant the caller's grants do not wholly cover) and expiring no later than the caller's credential (403). The token is shown once; only its hash is stored.", &[], Some(("NewAdminToken", true)), ("201", Some("AdminTokenWithSecret")), &[]), "admin-tokens"),
        },
        "/admin/v1/admin-tokens/{id}/revoke": {
            "post": with_tag(op("revokeAdminToken", "Revoke an admin token at once (on this server; on the others within the reload interval). Revoking a revoked token changes nothing.", &["id"], None, ("200", Some("RevokedAdminToken")), &["404"]), "admin-tokens"),
        },
        "/admin/v1/audit": {
            "get": with_tag({
                let mut o = op("listAudit", "Audit records after `after`, oldest first.", &[], None, ("200", Some("AuditList")), &["400"]);
                let params = o["parameters"].as_array_mut().expect("parameters");
                params.push(json!({"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "default": 0}, "description": "the sequence number to list after"}));
                params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "description": "most records"}));
                o
            }, "audit"),
        },
    })
}

fn schemas() -> Value {
    let algs: Vec<&str> = keyward_jose::Algorithm::ALL
        .iter()
        .map(|a| a.name())
        .collect();
    let auths: Vec<&str> = ClientAuth::ALL.iter().map(|a| a.as_str()).collect();
    let time = json!({"type": "string", "format": "date-time"});
    let opt_time = json!({"type": ["string", "null"], "format": "date-time"});
    let words = json!({"type": "array", "items": {"type": "string", "minLength": 1}});
    let mut m = Map::new();
    m.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error", "error_description"],
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}
        }),
    );
    m.insert("Policy".into(), json!({
                    "type": "object",
                    "additionalProperties": false,
                    "description": "Every field may be omitted and takes its default.",
                    "properties": {
                        "alg": {"type": "string", "enum": algs, "default": "RS256"},
                        "rsa_bits": {"type": ["integer", "null"], "enum": [2048, 3072, 4096, null], "description": "RSA algorithms only; default 4096"},
                        "rotate_every_secs": {"type": "integer", "minimum": 1, "default": keyward_store::records::DEFAULT_ROTATE_EVERY_SECS},
                        "lead_secs": {"type": "integer", "minimum": 1, "default": keyward_store::records::DEFAULT_LEAD_SECS, "description": "shorter than rotate_every_secs"},
                        "token_ttl_secs": {"type": "integer", "minimum": 1, "default": keyward_store::records::DEFAULT_TOKEN_TTL_SECS}
                    }
                }));
    let key_store = json!({
        "type": "string",
        "enum": ["local", "pkcs11", "aws-kms"],
        "default": "local",
        "description": "where the environment's keys are made: local (sealed in the store), pkcs11 (an HSM) or aws-kms; a device store must be configured on the server (400 otherwise), and refuses algorithms it cannot hold (400); 503 while the device is down"
    });
    m.insert("NewEnvironment".into(), json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name", "issuer"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"},
                        "issuer": {"type": "string", "format": "uri", "description": "absolute http(s) URL without query or fragment"},
                        "policy": {"$ref": "#/components/schemas/Policy"},
                        "first_key": {"type": "boolean", "default": true, "description": "make the first key (per the policy) in the same transaction (required for a device key_store)"},
                        "key_store": key_store.clone()
                    }
                }));
    m.insert(
        "EnvironmentUpdate".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "key_store": key_store.clone(),
                "login_url": {"type": ["string", "null"], "format": "uri", "description": "where browsers log in (`?login_challenge=` is added); https, or http to localhost; null removes it"},
                "consent_url": {"type": ["string", "null"], "format": "uri", "description": "where browsers consent (`?consent_challenge=`); null: the login URL"}
            }
        }),
    );
    m.insert(
        "NewEnvironmentCreated".into(),
        json!({
            "allOf": [
                {"$ref": "#/components/schemas/Environment"},
                {"type": "object", "properties": {"first_key": {"oneOf": [{"$ref": "#/components/schemas/Key"}, {"type": "null"}]}}}
            ]
        }),
    );
    m.insert(
        "DeletedEnvironment".into(),
        json!({
            "type": "object",
            "properties": {
                "deleted": {"type": "string"},
                "keys": {"type": "array", "items": {"type": "string"}},
                "published_keys": {"type": "array", "items": {"type": "string"}},
                "clients": {"type": "array", "items": {"type": "string"}}
            }
        }),
    );
    m.insert(
        "Environment".into(),
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "issuer": {"type": "string"},
                "created_at": time,
                "key_store": key_store.clone(),
                "login_url": {"type": ["string", "null"]},
                "consent_url": {"type": ["string", "null"]},
                "policy": {
                    "type": "object",
                    "properties": {
                        "alg": {"type": "string", "enum": algs},
                        "rsa_bits": {"type": ["integer", "null"]},
                        "rotate_every_secs": {"type": "integer"},
                        "lead_secs": {"type": "integer"},
                        "token_ttl_secs": {"type": "integer"},
                        "jwks_max_age_secs": {"type": "integer"}
                    }
                }
            }
        }),
    );
    m.insert(
        "EnvironmentList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/Environment"}}),
    );
    m.insert("Key".into(), json!({
                    "type": "object",
                    "properties": {
                        "kid": {"type": "string"},
                        "env": {"type": "string"},
                        "alg": {"type": "string", "enum": algs},
                        "size": {"type": "integer", "description": "RSA modulus or curve bits"},
                        "curve": {"type": ["string", "null"]},
                        "state": {"type": "string", "enum": ["pending", "active", "retired", "removed", "revoked"]},
                        "origin": {"type": "string", "enum": ["generated", "imported"]},
                        "owner": {"type": ["string", "null"]},
                        "description": {"type": ["string", "null"]},
                        "created_at": time,
                        "activates_at": time,
                        "retires_at": opt_time,
                        "removes_at": opt_time,
                        "revoked_at": opt_time,
                        "key_store": key_store.clone(),
                        "reference": {"type": ["string", "null"], "description": "for a device key, the device's reference to it (PKCS#11 token serial and CKA_ID, or the KMS key ARN); no secret"},
                        "destroyed_at": opt_time
                    }
                }));
    m.insert(
        "KeyList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/Key"}}),
    );
    m.insert("RotateRequest".into(), json!({
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "immediate": {"type": "boolean", "default": false, "description": "sign at once (verifiers that cached the JWKS reject its tokens until they refresh)"},
                        "lead_secs": {"type": "integer", "minimum": 0, "maximum": MAX_LEAD_SECS, "description": "default: the environment's lead; not with immediate"},
                        "alg": {"type": "string", "enum": algs, "description": "rotate to this algorithm (e.g. from RS256 to ML-DSA-65); the environment's policy takes it, in the same transaction"},
                        "rsa_bits": {"type": "integer", "enum": [2048, 3072, 4096], "description": "RSA size of the new key (RSA only); the environment's policy takes it"}
                    }
                }));
    m.insert("RotatedKey".into(), json!({
                    "allOf": [
                        {"$ref": "#/components/schemas/Key"},
                        {"type": "object", "properties": {"retiring": {"$ref": "#/components/schemas/KeyList"}}}
                    ]
                }));
    m.insert(
        "RetireRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "force": {"type": "boolean", "default": false},
                "accept_outage": {"type": "boolean", "default": false, "description": "with force: retire the only key that signs now, and accept that the token endpoint answers 503 until another key activates"}
            }
        }),
    );
    m.insert(
        "RevokeRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"reason": {"type": "string", "maxLength": MAX_REASON_LEN}}
        }),
    );
    m.insert(
        "RevokedKey".into(),
        json!({
            "allOf": [
                {"$ref": "#/components/schemas/Key"},
                {"type": "object", "properties": {"was_signing": {"type": "boolean"}}}
            ]
        }),
    );
    m.insert("NewClient".into(), json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 200},
                        "auth": {"type": "string", "enum": auths, "default": "client_secret_basic"},
                        "scopes": words,
                        "audiences": words,
                        "grant_types": {"type": "array", "items": {"type": "string", "enum": crate::clients::GRANT_TYPES}, "default": ["client_credentials", "refresh_token"]},
                        "redirect_uris": {"type": "array", "items": {"type": "string", "format": "uri"}, "description": "authorization_code: where responses may go, compared byte for byte (https, or http to localhost; no fragment, no wildcard)"},
                        "post_logout_redirect_uris": {"type": "array", "items": {"type": "string", "format": "uri"}, "description": "where the browser may go after logout (exact match)"},
                        "first_party": {"type": "boolean", "default": false, "description": "consent is skipped"},
                        "jwks": {"type": "object", "description": "JWK Set of a private_key_jwt client, or the x5c certificates of a self_signed_tls_client_auth one"},
                        "jwks_uri": {"type": "string", "format": "uri", "description": "or where to fetch it"},
                        "access_token_ttl_secs": {"type": "integer", "minimum": 1},
                        "refresh_token_ttl_secs": {"type": "integer", "minimum": 1},
                        "tls_client_auth_subject_dn": {"type": "string", "description": "tls_client_auth: the certificate's subject DN (RFC 4514); exactly one of the five tls_client_auth_* names"},
                        "tls_client_auth_san_dns": {"type": "string"},
                        "tls_client_auth_san_uri": {"type": "string"},
                        "tls_client_auth_san_ip": {"type": "string"},
                        "tls_client_auth_san_email": {"type": "string"},
                        "tls_client_certificate_bound_access_tokens": {"type": "boolean", "description": "access tokens carry cnf.x5t#S256 of the connection's certificate (default: true for tls_client_auth and self_signed_tls_client_auth)"}
                    }
                }));
    m.insert("ClientPatch".into(), json!({
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 200},
                        "auth": {"type": "string", "enum": auths, "description": "switching between a secret method and private_key_jwt is refused"},
                        "scopes": words,
                        "audiences": words,
                        "grant_types": {"type": "array", "items": {"type": "string", "enum": crate::clients::GRANT_TYPES}},
                        "redirect_uris": {"type": "array", "items": {"type": "string", "format": "uri"}},
                        "post_logout_redirect_uris": {"type": "array", "items": {"type": "string", "format": "uri"}},
                        "first_party": {"type": "boolean"},
                        "jwks": {"type": ["object", "null"], "description": "replaces the key source (jwks and jwks_uri together)"},
                        "jwks_uri": {"type": ["string", "null"]},
                        "access_token_ttl_secs": {"type": ["integer", "null"], "minimum": 1},
                        "refresh_token_ttl_secs": {"type": ["integer", "null"], "minimum": 1}
                    }
                }));
    m.insert(
        "Client".into(),
        json!({
            "type": "object",
            "properties": {
                "client_id": {"type": "string"},
                "env": {"type": "string"},
                "name": {"type": "string"},
                "auth": {"type": "string", "enum": auths},
                "scopes": words,
                "audiences": words,
                "grant_types": words,
                "jwks_uri": {"type": ["string", "null"]},
                "has_jwks": {"type": "boolean"},
                "access_token_ttl_secs": {"type": ["integer", "null"]},
                "refresh_token_ttl_secs": {"type": ["integer", "null"]},
                "tls_client_certificate_bound_access_tokens": {"type": "boolean"},
                "redirect_uris": {"type": "array", "items": {"type": "string"}},
                "post_logout_redirect_uris": {"type": "array", "items": {"type": "string"}},
                "first_party": {"type": "boolean"},
                "tls_client_auth_subject_dn": {"type": "string"},
                "tls_client_auth_san_dns": {"type": "string"},
                "tls_client_auth_san_uri": {"type": "string"},
                "tls_client_auth_san_ip": {"type": "string"},
                "tls_client_auth_san_email": {"type": "string"},
                "created_at": time,
                "updated_at": time
            }
        }),
    );
    m.insert(
        "ClientList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/Client"}}),
    );
    m.insert("ClientWithSecret".into(), json!({
                    "allOf": [
                        {"$ref": "#/components/schemas/Client"},
                        {"type": "object", "properties": {"client_secret": {"type": ["string", "null"], "description": "shown once; null for private_key_jwt"}}}
                    ]
                }));
    m.insert(
        "ClientSecret".into(),
        json!({
            "type": "object",
            "required": ["client_id", "client_secret"],
            "properties": {"client_id": {"type": "string"}, "client_secret": {"type": "string"}}
        }),
    );
    m.insert("MintRequest".into(), json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["sub", "client_id"],
                    "properties": {
                        "sub": {"type": "string", "minLength": 1, "maxLength": 500, "description": "the user"},
                        "client_id": {"type": "string", "description": "a client of the environment; the token is bound to it"},
                        "scopes": {"type": "array", "items": {"type": "string"}, "description": "each registered for the client; default: all of the client's scopes"},
                        "audience": {"type": "string", "description": "one of the client's audiences; default: all of them, or the issuer"},
                        "roles": {"type": "array", "items": {"type": "string"}},
                        "permissions": {"type": "array", "items": {"type": "string"}, "description": "dotted permission strings, a trailing * covers a group"},
                        "refresh": {"type": "boolean", "default": true, "description": "also issue a refresh token"}
                    }
                }));
    m.insert(
        "TokenResponse".into(),
        json!({
            "type": "object",
            "required": ["access_token", "token_type", "expires_in"],
            "properties": {
                "access_token": {"type": "string", "description": "RFC 9068 JWT (typ at+jwt)"},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "scope": {"type": "string"},
                "refresh_token": {"type": "string"}
            }
        }),
    );
    let grants = json!({"type": "array", "items": {"type": "string"}, "description": "permissions: dot-separated segments of [A-Za-z0-9_:-], the last may be `*` (a group); or `*` alone"});
    m.insert("NewAdminToken".into(), json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["permissions", "ttl_secs"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200, "default": "admin"},
            "owner": {"type": "string", "minLength": 1, "maxLength": 200, "description": "default: the caller's owner"},
            "permissions": {"allOf": [grants.clone()], "minItems": 1, "maxItems": 64},
            "ttl_secs": {"type": "integer", "minimum": 1, "maximum": super::tokens::MAX_API_TTL_SECS}
        }
    }));
    m.insert(
        "AdminToken".into(),
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "owner": {"type": ["string", "null"]},
                "permissions": grants,
                "created_at": time,
                "expires_at": opt_time,
                "revoked_at": opt_time,
                "created_by": {"type": ["string", "null"], "description": "the actor that made it"}
            }
        }),
    );
    m.insert(
        "AdminTokenList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/AdminToken"}}),
    );
    m.insert("AdminTokenWithSecret".into(), json!({
        "allOf": [
            {"$ref": "#/components/schemas/AdminToken"},
            {"type": "object", "required": ["token"], "properties": {"token": {"type": "string", "description": "shown once"}}}
        ]
    }));
    m.insert("RevokedAdminToken".into(), json!({
        "type": "object",
        "properties": {"id": {"type": "string"}, "revoked": {"type": "boolean"}, "already_revoked": {"type": "boolean"}}
    }));
    m.insert(
        "AuditList".into(),
        json!({
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "seq": {"type": "integer"},
                    "at": {"type": "integer", "description": "unix seconds"},
                    "actor": {"type": "string"},
                    "action": {"type": "string"},
                    "env": {"type": ["string", "null"]},
                    "subject": {"type": ["string", "null"]},
                    "detail": {},
                    "prev_hash": {"type": "string"},
                    "hash": {"type": "string"}
                }
            }
        }),
    );
    m.insert(
        "LoginRequest".into(),
        json!({
            "type": "object",
            "properties": {
                "challenge": {"type": "string"},
                "client_id": {"type": "string"},
                "client_name": {"type": ["string", "null"]},
                "requested_scope": words,
                "login_hint": {"type": ["string", "null"]},
                "prompt": {"type": "string"},
                "max_age": {"type": ["integer", "null"]},
                "skip": {"type": "boolean"},
                "subject": {"type": ["string", "null"]},
                "request_url": {"type": "string"},
                "expires_at": time
            }
        }),
    );
    m.insert(
        "ConsentRequest".into(),
        json!({
            "type": "object",
            "properties": {
                "challenge": {"type": "string"},
                "client_id": {"type": "string"},
                "client_name": {"type": ["string", "null"]},
                "subject": {"type": "string"},
                "requested_scope": words,
                "skip": {"type": "boolean"},
                "request_url": {"type": "string"},
                "expires_at": time
            }
        }),
    );
    m.insert("LoginAccept".into(), json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["subject"],
        "properties": {
            "subject": {"type": "string", "minLength": 1, "maxLength": 255},
            "acr": {"type": "string"},
            "amr": words,
            "remember": {"type": "boolean", "default": false, "description": "later requests in this browser session skip the login"},
            "remember_for": {"type": "integer", "minimum": 0, "description": "seconds; 0 or absent: while the browser session lives"},
            "claims": {"type": "object", "description": "userinfo claims (name, email, email_verified, ...); not the ID token's own (iss, sub, aud, ...)"}
        }
    }));
    m.insert("ConsentAccept".into(), json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "grant_scope": words,
            "remember": {"type": "boolean", "default": false},
            "remember_for": {"type": "integer", "minimum": 0, "description": "seconds; 0 or absent: until revoked"}
        }
    }));
    m.insert(
        "Reject".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "pattern": "^[a-z_]{1,64}$"},
                "error_description": {"type": "string", "maxLength": 500}
            }
        }),
    );
    m.insert("RedirectTo".into(), json!({
        "type": "object",
        "properties": {"redirect_to": {"type": "string", "description": "send the browser here"}}
    }));
    Value::Object(m)
}

fn with_tag(mut op: Value, tag: &str) -> Value {
    op["tags"] = json!([tag]);
    op
}
