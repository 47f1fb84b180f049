"""Tests of the example login app against a recording stand-in for keyward's admin API.

    python3 -m unittest examples/login-app/test_app.py

The whole flow against a real keyward is in tests/interop (run.sh) and the
browser test (crates/cli/tests/login_browser.rs); these check what the app
itself decides: CSRF, wrong passwords, what it sends on accept and reject.
"""

import http.client
import json
import os
import re
import sys
import threading
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import app  # noqa: E402

TOKEN = "kwa_test-admin-token"


class FakeKeyward(BaseHTTPRequestHandler):
    """Answers the six login/consent admin routes of environment `default` and records every call."""

    calls: list = []
    used: set = set()

    def log_message(self, *a):
        pass

    def _json(self, status, obj):
        b = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        FakeKeyward.calls.append((self.command, self.path, body, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json(401, {"error": "unauthorized"})
        m = re.fullmatch(r"/admin/v1/envs/default/(login|consent)-requests/([^/]+)(/accept|/reject)?", self.path)
        if not m:
            return self._json(404, {"error": "not_found"})
        kind, challenge, action = m.groups()
        if challenge.startswith("gone"):
            return self._json(410, {"error": "gone", "error_description": "challenge expired"})
        if action is None:
            if kind == "login":
                return self._json(200, {
                    "challenge": challenge, "client_id": "c1", "client_name": "Demo <RP>",
                    "requested_scope": ["openid", "email"], "login_hint": None, "prompt": None,
                    "max_age": None, "skip": challenge.startswith("skip"),
                    "subject": "alice" if challenge.startswith("skip") else None,
                    "request_url": "http://kw/oauth2/authorize?x",
                })
            return self._json(200, {
                "challenge": challenge, "client_id": "c1", "client_name": "Demo <RP>", "subject": "alice",
                "requested_scope": ["openid", "email", "offline_access"], "skip": challenge.startswith("skip"),
            })
        if (kind, challenge) in FakeKeyward.used:
            return self._json(409, {"error": "conflict", "error_description": "challenge already used"})
        FakeKeyward.used.add((kind, challenge))
        verifier = "login_verifier" if kind == "login" else "consent_verifier"
        return self._json(200, {"redirect_to": f"http://kw/oauth2/authorize?{verifier}=v-{challenge}"})

    do_GET = do_POST = _handle


def serve(handler):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class LoginAppTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kw = serve(FakeKeyward)
        cfg = app.Config({
            "LOGIN_APP_KEYWARD_URL": f"http://127.0.0.1:{cls.kw.server_address[1]}",
            "LOGIN_APP_ADMIN_TOKEN": TOKEN,
            "LOGIN_APP_LISTEN": "127.0.0.1:0",
        })
        app.Handler.cfg = cfg
        app.Handler.log_message = lambda *a: None
        app.Handler.kw = app.Keyward(cfg)
        cls.app = serve(app.Handler)
        cls.port = cls.app.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.app.shutdown()
        cls.kw.shutdown()

    def setUp(self):
        FakeKeyward.calls.clear()
        FakeKeyward.used.clear()

    def req(self, method, path, form=None, cookie=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form, doseq=True)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if cookie:
            headers["Cookie"] = cookie
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()

    def open_form(self, path):
        status, headers, body = self.req("GET", path)
        self.assertEqual(status, 200, body)
        cookie = headers["Set-Cookie"].split(";")[0]
        csrf = re.search(r'name=csrf value="([0-9a-f]+)"', body).group(1)
        return cookie, csrf, body

    def writes(self):
        return [c for c in FakeKeyward.calls if c[0] == "POST"]

    def test_login_page_shows_client_and_scopes_escaped(self):
        cookie, _, body = self.open_form("/login?login_challenge=c1")
        self.assertIn("Demo &lt;RP&gt;", body)
        self.assertNotIn("Demo <RP>", body)
        self.assertIn("openid email", body)
        self.assertIn("HttpOnly", self.req("GET", "/login?login_challenge=c1")[1]["Set-Cookie"])
        self.assertEqual(FakeKeyward.calls[0][1], "/admin/v1/envs/default/login-requests/c1")

    def test_login_accept_sends_subject_claims_remember_and_redirects(self):
        cookie, csrf, _ = self.open_form("/login?login_challenge=c2")
        status, headers, _ = self.req("POST", "/login", {
            "login_challenge": "c2", "csrf": csrf, "username": "alice",
            "password": "alice-demo-password", "remember": "1", "action": "accept"}, cookie)
        self.assertEqual(status, 303)
        self.assertEqual(headers["Location"], "http://kw/oauth2/authorize?login_verifier=v-c2")
        (_, path, body, _), = self.writes()
        self.assertEqual(path, "/admin/v1/envs/default/login-requests/c2/accept")
        self.assertEqual(body["subject"], "alice")
        self.assertTrue(body["remember"])
        self.assertEqual(body["claims"], {"name": "Alice Example", "email": "alice@example.com", "email_verified": True})

    def test_wrong_password_or_unknown_user_accepts_nothing(self):
        cookie, csrf, _ = self.open_form("/login?login_challenge=c3")
        for user, pw in [("alice", "bob-demo-password"), ("alice", ""), ("mallory", "x"), ("", "")]:
            status, _, body = self.req("POST", "/login", {
                "login_challenge": "c3", "csrf": csrf, "username": user, "password": pw, "action": "accept"}, cookie)
            self.assertEqual(status, 401, body)
            self.assertIn("Wrong username or password", body)
        self.assertEqual(self.writes(), [])

    def test_csrf_missing_wrong_or_for_another_challenge_is_refused(self):
        cookie, csrf, _ = self.open_form("/login?login_challenge=c4")
        good = {"login_challenge": "c4", "username": "alice", "password": "alice-demo-password", "action": "accept"}
        other_cookie, other_csrf, _ = self.open_form("/login?login_challenge=c5")
        cases = [
            (dict(good), cookie),                                # no token
            (dict(good, csrf=csrf), None),                       # no cookie
            (dict(good, csrf="0" * 64), cookie),                 # forged token
            (dict(good, csrf=csrf), other_cookie),               # another browser's cookie
            (dict(good, csrf=other_csrf), other_cookie),         # a token for another challenge
        ]
        for form, ck in cases:
            status, _, body = self.req("POST", "/login", form, ck)
            self.assertEqual(status, 403, (form, ck, body))
        self.assertEqual(self.writes(), [])

    def test_cancel_rejects_with_access_denied(self):
        cookie, csrf, _ = self.open_form("/login?login_challenge=c6")
        status, headers, _ = self.req("POST", "/login", {"login_challenge": "c6", "csrf": csrf, "action": "deny"}, cookie)
        self.assertEqual(status, 303)
        (_, path, body, _), = self.writes()
        self.assertEqual(path, "/admin/v1/envs/default/login-requests/c6/reject")
        self.assertEqual(body["error"], "access_denied")

    def test_skip_accepts_without_a_form(self):
        status, headers, _ = self.req("GET", "/login?login_challenge=skip1")
        self.assertEqual(status, 303)
        (_, path, body, _), = self.writes()
        self.assertEqual(path, "/admin/v1/envs/default/login-requests/skip1/accept")
        self.assertEqual(body, {"subject": "alice"})

    def test_consent_grants_only_ticked_requested_scopes(self):
        cookie, csrf, body = self.open_form("/consent?consent_challenge=k1")
        self.assertIn('value="offline_access"', body)
        status, headers, _ = self.req("POST", "/consent", {
            "consent_challenge": "k1", "csrf": csrf, "action": "accept",
            "grant_scope": ["openid", "admin.everything", "offline_access"]}, cookie)
        self.assertEqual(status, 303)
        self.assertEqual(headers["Location"], "http://kw/oauth2/authorize?consent_verifier=v-k1")
        accept = [c for c in self.writes() if c[1].endswith("/accept")]
        self.assertEqual(accept[0][2]["grant_scope"], ["openid", "offline_access"])

    def test_consent_deny_and_csrf(self):
        cookie, csrf, _ = self.open_form("/consent?consent_challenge=k2")
        status, _, _ = self.req("POST", "/consent", {"consent_challenge": "k2", "csrf": "bad", "action": "accept"}, cookie)
        self.assertEqual(status, 403)
        self.assertEqual(self.writes(), [])
        status, _, _ = self.req("POST", "/consent", {"consent_challenge": "k2", "csrf": csrf, "action": "deny"}, cookie)
        self.assertEqual(status, 303)
        (_, path, body, _), = self.writes()
        self.assertEqual(path, "/admin/v1/envs/default/consent-requests/k2/reject")
        self.assertEqual(body["error"], "access_denied")

    def test_used_or_expired_challenge_shows_an_error_page(self):
        status, _, body = self.req("GET", "/login?login_challenge=gone1")
        self.assertEqual(status, 400)
        self.assertIn("no longer valid", body)
        cookie, csrf, _ = self.open_form("/login?login_challenge=c7")
        form = {"login_challenge": "c7", "csrf": csrf, "username": "bob", "password": "bob-demo-password", "action": "accept"}
        self.assertEqual(self.req("POST", "/login", form, cookie)[0], 303)
        status, _, body = self.req("POST", "/login", form, cookie)  # second accept: keyward says 409
        self.assertEqual(status, 400)
        self.assertIn("no longer valid", body)

    def test_bad_requests(self):
        self.assertEqual(self.req("GET", "/login")[0], 404)
        self.assertEqual(self.req("GET", "/elsewhere")[0], 404)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("POST", "/login", body="{}", headers={"Content-Type": "application/json"})
        self.assertEqual(c.getresponse().status, 400)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("POST", "/login", body="x" * 10, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(app.MAX_BODY + 1)})
        self.assertEqual(c.getresponse().status, 400)
        self.assertEqual(self.writes(), [])


if __name__ == "__main__":
    unittest.main()
