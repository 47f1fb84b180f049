#!/usr/bin/env python3
"""An example login and consent app for keyward (Python 3.11+, standard library only).

keyward does not keep users: when an application sends a browser to
`{issuer}/oauth2/authorize`, keyward redirects it here with a one-time
`login_challenge`; this app checks the user's password, tells keyward who the
user is through the admin API, and sends the browser back to keyward. Then the
same for consent (`consent_challenge`). See README.md beside this file and
docs/login-flows.md for the whole exchange.

    LOGIN_APP_KEYWARD_URL=http://127.0.0.1:8080   # where keyward's /admin/v1 is served
    LOGIN_APP_ADMIN_TOKEN=kwa_...                 # admin token with keyward.env.{env}.logins.accept
    LOGIN_APP_ENV=default                         # the keyward environment
    LOGIN_APP_LISTEN=127.0.0.1:3000               # where this app listens
    python3 examples/login-app/app.py

Point the environment at it:
    keyward env update default --login-url http://127.0.0.1:3000/login --consent-url http://127.0.0.1:3000/consent
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---------------------------------------------------------------------------
# DEMO USER TABLE. This is an example: a real login app checks passwords
# against its own user store (salted, slow hashes; rate limits; MFA). Nothing
# here is meant for production.
# ---------------------------------------------------------------------------
DEMO_USERS = {
    "alice": {
        "password": "alice-demo-password",
        "name": "Alice Example",
        "email": "alice@example.com",
    },
    "bob": {
        "password": "bob-demo-password",
        "name": "Bob Example",
        "email": "bob@example.com",
    },
}

# Scope names shown to the user on the consent page (others are shown as is).
SCOPE_TEXT = {
    "openid": "Sign you in (your user id)",
    "profile": "Your name",
    "email": "Your email address",
    "offline_access": "Stay signed in (a refresh token)",
}

MAX_BODY = 16 * 1024
CSRF_COOKIE = "login_app_csrf"


class Config:
    def __init__(self, env: dict[str, str]):
        self.keyward_url = env.get("LOGIN_APP_KEYWARD_URL", "http://127.0.0.1:8080").rstrip("/")
        self.admin_token = env.get("LOGIN_APP_ADMIN_TOKEN", "")
        self.env = env.get("LOGIN_APP_ENV", "default")
        listen = env.get("LOGIN_APP_LISTEN", "127.0.0.1:3000")
        host, _, port = listen.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        # Signs the CSRF tokens; a fresh one per start is fine (forms in
        # flight when the app restarts fail once and are shown again).
        self.csrf_key = secrets.token_bytes(32)
        if not self.admin_token:
            raise SystemExit("LOGIN_APP_ADMIN_TOKEN is not set (an admin token with keyward.env.ENV.logins.accept)")


class AdminError(Exception):
    """keyward's admin API refused or failed; `status` is its HTTP status (0: unreachable)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Keyward:
    """The six admin API calls a login app makes (all under /admin/v1/envs/{env}/)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        url = f"{self.cfg.keyward_url}/admin/v1/envs/{urllib.parse.quote(self.cfg.env, safe='')}/{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.cfg.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read(1 << 20) or b"{}")
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read(1 << 16))
                msg = detail.get("error_description") or detail.get("error") or detail.get("message") or str(detail)
            except (ValueError, AttributeError):
                msg = e.reason
            raise AdminError(e.code, str(msg)) from None
        except (urllib.error.URLError, OSError) as e:
            raise AdminError(0, f"keyward is not reachable: {e}") from None

    @staticmethod
    def _challenge(c: str) -> str:
        return urllib.parse.quote(c, safe="")

    def login_request(self, c: str) -> dict:
        return self._call("GET", f"login-requests/{self._challenge(c)}")

    def accept_login(self, c: str, body: dict) -> str:
        return self._call("POST", f"login-requests/{self._challenge(c)}/accept", body)["redirect_to"]

    def reject_login(self, c: str, error: str, description: str) -> str:
        body = {"error": error, "error_description": description}
        return self._call("POST", f"login-requests/{self._challenge(c)}/reject", body)["redirect_to"]

    def consent_request(self, c: str) -> dict:
        return self._call("GET", f"consent-requests/{self._challenge(c)}")

    def accept_consent(self, c: str, body: dict) -> str:
        return self._call("POST", f"consent-requests/{self._challenge(c)}/accept", body)["redirect_to"]

    def reject_consent(self, c: str, error: str, description: str) -> str:
        body = {"error": error, "error_description": description}
        return self._call("POST", f"consent-requests/{self._challenge(c)}/reject", body)["redirect_to"]


def check_password(username: str, password: str) -> dict | None:
    """DEMO: the user's record when the password matches, else None (constant-time compare)."""
    user = DEMO_USERS.get(username)
    # Compare against something even for an unknown user, so both take as long.
    expected = user["password"] if user else "unknown-user-" + secrets.token_hex(8)
    ok = hmac.compare_digest(password.encode(), expected.encode())
    return user if ok and user else None


def claims_of(user: dict) -> dict:
    """What keyward returns from userinfo and puts in the ID token (filtered by granted scope)."""
    return {"name": user["name"], "email": user["email"], "email_verified": True}


# --- pages -----------------------------------------------------------------

STYLE = """
body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1d1d1f}
h1{font-size:1.4rem} .demo{background:#fff3cd;border:1px solid #e0c36a;padding:.5rem;font-size:.85rem}
label{display:block;margin:.6rem 0 .2rem} input[type=text],input[type=password]{width:100%;padding:.4rem;box-sizing:border-box}
.scopes label{display:flex;gap:.5rem;align-items:center} .error{color:#b00020} button{margin:.8rem .5rem 0 0;padding:.4rem 1rem}
code{background:#f2f2f2;padding:0 .2rem}
"""


def page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        '<p class=demo>Example login app (examples/login-app): demo users, not for production.</p>'
        f"{body}</body></html>"
    ).encode()


def login_form(req: dict, challenge: str, csrf: str, error: str = "", username: str = "") -> bytes:
    client = req.get("client_name") or req.get("client_id") or "an application"
    scopes = " ".join(req.get("requested_scope") or []) or "(none)"
    err = f'<p class=error id=error role=alert>{html.escape(error)}</p>' if error else ""
    hint = username or req.get("login_hint") or ""
    return page(
        "Sign in",
        f"<h1>Sign in to <span id=client>{html.escape(client)}</span></h1>"
        f"<p>It asks for: <code id=scopes>{html.escape(scopes)}</code></p>{err}"
        '<form method=post action="/login">'
        f'<input type=hidden name=login_challenge value="{html.escape(challenge)}">'
        f'<input type=hidden name=csrf value="{html.escape(csrf)}">'
        f'<label for=username>Username</label><input type=text id=username name=username autocomplete=username value="{html.escape(hint)}" autofocus>'
        '<label for=password>Password</label><input type=password id=password name=password autocomplete=current-password>'
        '<label><input type=checkbox id=remember name=remember value=1> Remember me on this device</label>'
        '<button type=submit id=accept name=action value=accept>Sign in</button>'
        '<button type=submit id=deny name=action value=deny>Cancel</button>'
        "</form>",
    )


def consent_form(req: dict, challenge: str, csrf: str) -> bytes:
    client = req.get("client_name") or req.get("client_id") or "an application"
    boxes = "".join(
        f'<label><input type=checkbox name=grant_scope value="{html.escape(s)}" id="scope-{html.escape(s)}" checked>'
        f"<span><code>{html.escape(s)}</code> {html.escape(SCOPE_TEXT.get(s, ''))}</span></label>"
        for s in req.get("requested_scope") or []
    )
    return page(
        "Allow access",
        f"<h1><span id=client>{html.escape(client)}</span> wants access</h1>"
        f"<p>Signed in as <b id=subject>{html.escape(req.get('subject') or '')}</b>. Untick what you do not want to share.</p>"
        '<form method=post action="/consent">'
        f'<input type=hidden name=consent_challenge value="{html.escape(challenge)}">'
        f'<input type=hidden name=csrf value="{html.escape(csrf)}">'
        f"<div class=scopes>{boxes}</div>"
        '<label><input type=checkbox id=remember name=remember value=1> Remember this decision</label>'
        '<button type=submit id=accept name=action value=accept>Allow</button>'
        '<button type=submit id=deny name=action value=deny>Deny</button>'
        "</form>",
    )


def error_page(message: str) -> bytes:
    return page("Error", f"<h1>Something went wrong</h1><p class=error id=error>{html.escape(message)}</p>")


# --- HTTP ------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "keyward-example-login-app"
    cfg: Config
    kw: Keyward

    def log_message(self, fmt, *args):  # one line per request on stderr, without query strings (challenges)
        sys.stderr.write("%s %s\n" % (self.command, self.path.split("?", 1)[0]))

    # CSRF: a random value in a cookie of this app (SameSite=Strict, HttpOnly)
    # and, in each form, HMAC(key, cookie | challenge). A POST must carry both,
    # matching, so another site can neither read nor forge the form field.
    def _csrf_cookie(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == CSRF_COOKIE and v:
                return v
        return None

    def _csrf_token(self, cookie: str, challenge: str) -> str:
        return hmac.new(self.cfg.csrf_key, f"{cookie}|{challenge}".encode(), hashlib.sha256).hexdigest()

    def _csrf_ok(self, form: dict[str, str], challenge: str) -> bool:
        cookie = self._csrf_cookie()
        if not cookie or not form.get("csrf"):
            return False
        return hmac.compare_digest(self._csrf_token(cookie, challenge), form["csrf"])

    def _send(self, status: int, body: bytes, extra: list[tuple[str, str]] = ()):
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # The challenge is in our URL: no Referer to other sites, no framing.
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        # No form-action: browsers apply it to every redirect after a form
        # is posted, and an accept redirects to keyward, then to the client.
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _form_page(self, render, challenge: str, status: int = HTTPStatus.OK):
        """Sends render(csrf_token), setting the CSRF cookie when the browser has none yet."""
        cookie = self._csrf_cookie()
        extra = []
        if not cookie:
            cookie = secrets.token_urlsafe(32)
            extra.append(("Set-Cookie", f"{CSRF_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict"))
        self._send(status, render(self._csrf_token(cookie, challenge)), extra)

    def _redirect(self, url: str):
        # Only ever to what keyward's admin API returned (its authorize endpoint,
        # or the client's redirect_uri on a rejection), and only to http(s).
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            self._send(HTTPStatus.BAD_GATEWAY, error_page("keyward returned an unusable redirect"))
            return
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", url)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _admin_failed(self, e: AdminError):
        # 404/409/410: unknown, used or expired challenge; the user starts again at the application.
        if e.status in (404, 409, 410):
            msg = f"This sign-in request is no longer valid ({e}). Go back to the application and start again."
            self._send(HTTPStatus.BAD_REQUEST, error_page(msg))
        else:
            self.log_error("keyward admin API: %s %s", e.status, e)
            self._send(HTTPStatus.BAD_GATEWAY, error_page("The sign-in service is not available; try again later."))

    def _query(self) -> tuple[str, dict[str, str]]:
        path, _, q = self.path.partition("?")
        return path, {k: v[0] for k, v in urllib.parse.parse_qs(q).items()}

    def _read_form(self) -> dict[str, list[str]] | None:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            n = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            return None
        if ctype != "application/x-www-form-urlencoded" or n < 0 or n > MAX_BODY:
            return None
        return urllib.parse.parse_qs(self.rfile.read(n).decode("utf-8", "replace"), keep_blank_values=True)

    def do_GET(self):
        path, q = self._query()
        try:
            if path == "/login" and q.get("login_challenge"):
                c = q["login_challenge"]
                req = self.kw.login_request(c)
                if req.get("skip"):
                    # keyward already knows this browser's user (remembered login): no form.
                    self._redirect(self.kw.accept_login(c, {"subject": req["subject"]}))
                    return
                self._form_page(lambda csrf: login_form(req, c, csrf), c)
            elif path == "/consent" and q.get("consent_challenge"):
                c = q["consent_challenge"]
                req = self.kw.consent_request(c)
                if req.get("skip"):
                    # First-party client or a remembered decision: grant what was asked.
                    self._redirect(self.kw.accept_consent(c, {"grant_scope": req.get("requested_scope") or []}))
                    return
                self._form_page(lambda csrf: consent_form(req, c, csrf), c)
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok")
            else:
                self._send(HTTPStatus.NOT_FOUND, error_page("Nothing here. Start at the application that sent you."))
        except AdminError as e:
            self._admin_failed(e)

    def do_POST(self):
        path, _ = self._query()
        raw = self._read_form()
        if raw is None:
            self._send(HTTPStatus.BAD_REQUEST, error_page("Bad form submission."))
            return
        form = {k: v[0] for k, v in raw.items()}
        try:
            if path == "/login":
                self._post_login(form)
            elif path == "/consent":
                self._post_consent(form, raw.get("grant_scope", []))
            else:
                self._send(HTTPStatus.NOT_FOUND, error_page("Nothing here."))
        except AdminError as e:
            self._admin_failed(e)

    def _post_login(self, form: dict[str, str]):
        c = form.get("login_challenge", "")
        if not c or not self._csrf_ok(form, c):
            self._send(HTTPStatus.FORBIDDEN, error_page("The form expired or did not come from this site. Start again."))
            return
        if form.get("action") == "deny":
            self._redirect(self.kw.reject_login(c, "access_denied", "The user cancelled the sign-in."))
            return
        username = form.get("username", "").strip()
        user = check_password(username, form.get("password", ""))
        if user is None:
            req = self.kw.login_request(c)  # still valid? (an expired one ends here with an error page)
            self._form_page(
                lambda csrf: login_form(req, c, csrf, "Wrong username or password.", username), c, HTTPStatus.UNAUTHORIZED
            )
            return
        body = {
            "subject": username,
            "amr": ["pwd"],
            "remember": form.get("remember") == "1",
            "remember_for": 3600,
            "claims": claims_of(user),
        }
        self._redirect(self.kw.accept_login(c, body))

    def _post_consent(self, form: dict[str, str], ticked: list[str]):
        c = form.get("consent_challenge", "")
        if not c or not self._csrf_ok(form, c):
            self._send(HTTPStatus.FORBIDDEN, error_page("The form expired or did not come from this site. Start again."))
            return
        if form.get("action") == "deny":
            self._redirect(self.kw.reject_consent(c, "access_denied", "The user denied access."))
            return
        req = self.kw.consent_request(c)
        requested = req.get("requested_scope") or []
        # Only what was asked for can be granted, whatever the form says.
        grant = [s for s in requested if s in ticked]
        body = {"grant_scope": grant, "remember": form.get("remember") == "1", "remember_for": 3600}
        self._redirect(self.kw.accept_consent(c, body))


def main() -> None:
    cfg = Config(dict(os.environ))
    Handler.cfg = cfg
    Handler.kw = Keyward(cfg)
    srv = ThreadingHTTPServer((cfg.host, cfg.port), Handler)
    print(f"login app on http://{cfg.host}:{srv.server_address[1]} (keyward {cfg.keyward_url}, env {cfg.env})", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
