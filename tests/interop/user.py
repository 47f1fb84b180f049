"""The "user" of the relying-party interop tests: a scripted browser (Python stdlib).

    python3 user.py JAR AUTHORIZATION_URL REDIRECT_URI [USERNAME PASSWORD [REMEMBER]]

Opens AUTHORIZATION_URL with the cookies in JAR (a Mozilla cookie file, kept
between calls: it is the browser's keyward_session), follows redirects through
keyward and the example login app (examples/login-app), fills the login form
(USERNAME, PASSWORD, "remember me" when REMEMBER is 1) and the consent form
(every scope ticked), confirms keyward's device page (the device grant's user
code, already in the URL), and stops at the first redirect to REDIRECT_URI. With
response_mode=form_post keyward answers with an auto-submitting form instead:
its fields are turned into the same query string.

Prints one JSON object: {"callback": URL, "pages": ["login", "consent", ...]},
the pages it saw (so a caller can tell a remembered login, which shows no login
form, from a fresh one). A page it does not understand is an error (exit 1).
"""

import html.parser
import http.cookiejar
import json
import sys
import urllib.error
import urllib.parse
import urllib.request


class Form(html.parser.HTMLParser):
    """The first <form> of a page: its action, method and fields as a browser would submit them."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.method = "get"
        self.fields = []  # (name, value, type)
        self.buttons = []  # (name, value)
        self._in = False
        self._done = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form" and not self._done:
            self._in = True
            self.action = a.get("action", "")
            self.method = a.get("method", "get").lower()
        elif self._in and tag == "input" and a.get("name"):
            t = a.get("type", "text").lower()
            if t == "submit":
                self.buttons.append((a["name"], a.get("value", "")))
            else:
                self.fields.append((a["name"], a.get("value", ""), t))
        elif self._in and tag == "button" and a.get("name"):
            self.buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form" and self._in:
            self._in = False
            self._done = True


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def main():
    jar_path, url, redirect_uri = sys.argv[1:4]
    username = sys.argv[4] if len(sys.argv) > 4 else "alice"
    password = sys.argv[5] if len(sys.argv) > 5 else "alice-demo-password"
    remember = len(sys.argv) > 6 and sys.argv[6] == "1"
    jar = http.cookiejar.MozillaCookieJar(jar_path)
    try:
        jar.load(ignore_discard=True, ignore_expires=True)
    except FileNotFoundError:
        pass
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    pages = []
    method, data = "GET", None
    for _ in range(20):
        if url.startswith(redirect_uri) and method == "GET":
            jar.save(ignore_discard=True, ignore_expires=True)
            print(json.dumps({"callback": url, "pages": pages}))
            return
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            resp = opener.open(req, timeout=15)
            status, headers, body = resp.status, resp.headers, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read().decode("utf-8", "replace")
        if status in (301, 302, 303, 307):
            url = urllib.parse.urljoin(url, headers["Location"])
            method, data = "GET", None
            continue
        if status != 200:
            sys.exit(f"user: {method} {url} -> HTTP {status}: {body[:500]}")
        form = Form()
        form.feed(body)
        if form.action is None:
            sys.exit(f"user: {url}: a page without a form: {body[:500]}")
        target = urllib.parse.urljoin(url, form.action)
        names = {n for n, _, _ in form.fields}
        fields = []
        if "login_challenge" in names:
            pages.append("login")
            for n, v, t in form.fields:
                if n == "username":
                    v = username
                elif n == "password":
                    v = password
                elif n == "remember":
                    if not remember:
                        continue
                elif t == "checkbox":
                    continue
                fields.append((n, v))
            fields.append(("action", "accept"))
        elif "consent_challenge" in names:
            pages.append("consent")
            fields = [(n, v) for n, v, t in form.fields if n != "remember"]
            fields.append(("action", "accept"))
        elif "user_code" in names and "confirm" in names:
            # keyward's device page (RFC 8628): the code is the device's, confirm it.
            pages.append("device")
            fields = [(n, v) for n, v, _ in form.fields]
        elif target.startswith(redirect_uri) and form.method == "post":
            # response_mode=form_post: the callback's parameters as a query.
            pages.append("form_post")
            fields = [(n, v) for n, v, _ in form.fields]
            url = target + ("&" if "?" in target else "?") + urllib.parse.urlencode(fields)
            method, data = "GET", None
            continue
        else:
            sys.exit(f"user: {url}: a form this user does not know: {body[:500]}")
        url, method, data = target, form.method.upper(), urllib.parse.urlencode(fields).encode()
    sys.exit("user: more than 20 steps without reaching the redirect URI")


if __name__ == "__main__":
    main()
