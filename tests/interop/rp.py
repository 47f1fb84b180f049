"""A relying party built with Authlib, against a running keyward and the example login app.

    python rp.py ISSUER CLIENT_ID CLIENT_SECRET|- RP_BASE JAR USER_CMD...

With RP_EXCHANGE_AUDIENCE=AUD in the environment (a client allowed the
token-exchange grant and audience AUD) it also exchanges the user's access
token (RFC 8693) for one to AUD with a narrower scope, verified with PyJWT.

Like rp.mjs (openid-client), with Authlib's own OpenID Connect client: the
same OAuth2Mixin + OpenIDMixin its Flask, Django and Starlette integrations
are made of, over its requests-based OAuth2Session, without a web framework.
Discovery, PKCE S256, state, nonce, the code grant, the ID token checked by
Authlib (joserfc signature check against the JWKS, then CodeIDToken: iss, aud,
exp, iat, nonce, at_hash), userinfo, refresh, the end-session URL.

CLIENT_SECRET "-" makes it a public client. Prints "ok STEP" per step passed;
the first failure prints "FAIL STEP: why" and exits 1.
"""

import base64
import json
import os
import subprocess
import sys
import urllib.parse
import warnings

warnings.simplefilter("ignore")  # Authlib's deprecation notes about its own modules

from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.base_client import BaseApp, OAuth2Mixin, OpenIDMixin  # noqa: E402
from authlib.integrations.base_client.errors import OAuthError  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
import jwt  # noqa: E402  (PyJWT, for the exchanged access token)

SCOPE = "openid profile email offline_access"


class NoFramework:
    """What Authlib's integrations hand the app for token updates; nothing to persist here."""

    def update_token(self, *a, **k):
        pass


class RelyingParty(OAuth2Mixin, OpenIDMixin, BaseApp):
    client_cls = OAuth2Session


class Fail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


def header(jwt):
    seg = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


def main():
    issuer, client_id, secret, rp_base, jar, *user_cmd = sys.argv[1:]
    redirect_uri, post_logout_uri = f"{rp_base}/callback", f"{rp_base}/logged-out"
    public = secret == "-"
    exchange_audience = os.environ.get("RP_EXCHANGE_AUDIENCE", "")
    rp = RelyingParty(
        NoFramework(),
        name="keyward",
        client_id=client_id,
        client_secret=None if public else secret,
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "none" if public else "client_secret_basic",
        },
    )

    def user(url, remember="1"):
        out = subprocess.run(
            [*user_cmd, jar, url, rp_base, "alice", "alice-demo-password", remember],
            capture_output=True, text=True, check=False,
        )
        if out.returncode != 0:
            raise Fail(f"the scripted browser failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def login(**extra):
        auth = rp.create_authorization_url(redirect_uri=redirect_uri, **extra)
        seen = user(auth["url"])
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(seen["callback"]).query))
        check(q.get("state") == auth["state"], f"state {q.get('state')} != {auth['state']}")
        check("code" in q, f"no code in {seen['callback']}: {q}")
        return auth, seen, q

    def code_grant(auth, q, verifier=None):
        return rp.fetch_access_token(
            redirect_uri=redirect_uri, code=q["code"], code_verifier=verifier or auth["code_verifier"]
        )

    def expect_invalid_grant(fn):
        try:
            fn()
        except OAuthError as e:
            check(e.error == "invalid_grant", f"expected invalid_grant, got {e.error}: {e.description}")
            return
        raise Fail("expected invalid_grant, the call succeeded")

    step = "discovery"
    try:
        meta = rp.load_server_metadata()
        check(meta["issuer"] == issuer, f"issuer {meta['issuer']}")
        check("S256" in meta.get("code_challenge_methods_supported", []), "S256 not advertised")
        check("plain" not in meta.get("code_challenge_methods_supported", []), "plain advertised")
        for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "end_session_endpoint", "jwks_uri"):
            check(meta.get(k), f"{k} missing")
        print(f"ok   {step}")

        step = "code flow with PKCE S256 (login and consent pages)"
        auth, seen, q = login()
        check("login" in seen["pages"] and "consent" in seen["pages"], f"pages {seen['pages']}")
        check(q.get("iss") == issuer, f"callback iss {q.get('iss')}")
        token = code_grant(auth, q)
        print(f"ok   {step}")

        step = "ID token validated by Authlib (iss, aud, nonce, at_hash, signature via JWKS)"
        claims = rp.parse_id_token(token, nonce=auth["nonce"])
        check(claims["sub"] == "alice", f"sub {claims['sub']}")
        check(client_id in ([claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"]), f"aud {claims['aud']}")
        check(header(token["id_token"]).get("typ") == "JWT", f"ID token typ {header(token['id_token']).get('typ')}")
        check(header(token["access_token"]).get("typ") == "at+jwt", "access token typ")
        # The same check refuses another nonce: the library is really checking.
        try:
            rp.parse_id_token(token, nonce=generate_token(20))
            raise Fail("a wrong nonce was accepted")
        except Fail:
            raise
        except Exception:  # noqa: BLE001 (joserfc's InvalidClaimError)
            pass
        print(f"ok   {step}")

        step = "userinfo"
        info = rp.userinfo(token=token)
        check(info["sub"] == "alice", f"userinfo sub {info.get('sub')}")
        check(info.get("email") == "alice@example.com", f"userinfo email {info.get('email')}")
        check(info.get("name") == "Alice Example", f"userinfo name {info.get('name')}")
        print(f"ok   {step}")

        step = "refresh (offline_access)"
        check(token.get("refresh_token"), "no refresh token although offline_access was granted")
        meta = rp.load_server_metadata()
        with rp._get_oauth_client(**meta) as session:
            refreshed = session.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
        check(refreshed["access_token"] != token["access_token"], "no new access token")
        check(refreshed.get("refresh_token") and refreshed["refresh_token"] != token["refresh_token"], "not rotated")
        check(rp.userinfo(token=refreshed)["sub"] == "alice", "userinfo after refresh")
        print(f"ok   {step}")

        step = "code replay refused, and it revokes what the code issued"
        expect_invalid_grant(lambda: code_grant(auth, q))
        try:
            rp.userinfo(token=token)
            raise Fail("the access token still works after the code replay")
        except Fail:
            raise
        except Exception as e:  # noqa: BLE001 (requests' HTTPError)
            check(getattr(getattr(e, "response", None), "status_code", None) == 401, f"userinfo after replay: {e}")

        def refresh_again():
            with rp._get_oauth_client(**meta) as session:
                session.refresh_token(meta["token_endpoint"], refresh_token=refreshed["refresh_token"])

        expect_invalid_grant(refresh_again)
        print(f"ok   {step}")

        step = "wrong PKCE verifier refused"
        auth2, seen2, q2 = login()
        check("login" not in seen2["pages"], f"remembered login showed the login form again: {seen2['pages']}")
        expect_invalid_grant(lambda: code_grant(auth2, q2, verifier=generate_token(48)))
        print(f"ok   {step}")

        step = "RP-initiated logout"
        out = rp.create_logout_url(post_logout_redirect_uri=post_logout_uri, id_token_hint=token["id_token"])
        back = urllib.parse.urlsplit(user(out["url"])["callback"])
        check(f"{back.scheme}://{back.netloc}{back.path}" == post_logout_uri, f"logout went to {back.geturl()}")
        check(dict(urllib.parse.parse_qsl(back.query)).get("state") == out["state"], "logout state")
        print(f"ok   {step}")

        step = "after logout the login page is shown again"
        auth3, seen3, q3 = login()
        check("login" in seen3["pages"], f"no login form after logout: {seen3['pages']}")
        t3 = code_grant(auth3, q3)
        check(rp.parse_id_token(t3, nonce=auth3["nonce"])["sub"] == "alice", "sub after logout and login")
        print(f"ok   {step}")

        step = "response_mode=form_post"
        auth4, seen4, q4 = login(response_mode="form_post")
        check("form_post" in seen4["pages"], f"no form_post page: {seen4['pages']}")
        t4 = code_grant(auth4, q4)
        check(rp.parse_id_token(t4, nonce=auth4["nonce"])["sub"] == "alice", "form_post sub")
        print(f"ok   {step}")

        if exchange_audience:
            step = "token exchange (RFC 8693): the user's access token for another audience, narrower scope"
            te = "urn:ietf:params:oauth:grant-type:token-exchange"
            check(te in meta.get("grant_types_supported", []), "token exchange not in discovery")

            def exchange(audience, scope):
                with rp._get_oauth_client(**meta) as session:
                    return session.fetch_token(
                        meta["token_endpoint"], grant_type=te, subject_token=t4["access_token"],
                        subject_token_type="urn:ietf:params:oauth:token-type:access_token",
                        audience=audience, scope=scope,
                    )

            ex = exchange(exchange_audience, "profile")
            check(ex.get("issued_token_type") == "urn:ietf:params:oauth:token-type:access_token",
                  f"issued_token_type {ex.get('issued_token_type')}")
            check(header(ex["access_token"]).get("typ") == "at+jwt", "exchanged token typ")
            # Verified by PyJWT against the JWKS, for the new audience only.
            jwk_client = jwt.PyJWKClient(meta["jwks_uri"])
            key = jwk_client.get_signing_key_from_jwt(ex["access_token"])
            got = jwt.decode(ex["access_token"], key.key, algorithms=[key.algorithm_name],
                             audience=exchange_audience, issuer=issuer)
            check(got["sub"] == "alice", f"exchanged sub {got['sub']}")
            check(got.get("scope", "").split() == ["profile"], f"exchanged scope {got.get('scope')}")
            print(f"ok   {step}")

            step = "token exchange refuses a wider scope and an audience the client does not have"
            for audience, scope in [(exchange_audience, "profile admin"), ("api://not-mine", "profile")]:
                try:
                    exchange(audience, scope)
                    raise Fail(f"exchange to {audience} with {scope!r} was accepted")
                except OAuthError as e:
                    check(e.error in ("invalid_scope", "invalid_target"), f"{audience} {scope!r}: {e.error} {e.description}")
            print(f"ok   {step}")
    except Exception as e:  # noqa: BLE001
        print(f"FAIL {step}: {type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
