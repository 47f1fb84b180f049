"""A tiny upstream for the gate's interop test.

usage: python upstream.py PORT HITS_FILE

Answers every GET with 200 "hello <X-Auth-Subject>" and appends the request
path to HITS_FILE, so the test can tell whether a request reached it.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, HITS = int(sys.argv[1]), sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with open(HITS, "a") as f:
            f.write(self.path + "\n")
        body = ("hello " + self.headers.get("X-Auth-Subject", "")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
