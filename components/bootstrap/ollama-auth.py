#!/usr/bin/env python3
"""Check API keys for nginx's auth_request: 200 for the right Bearer key, 401 otherwise.

The instance stores only the SHA-256 of the key, so the user-data, which every account
with ECS read access can see, never contains the key. Standard library only: it runs
on the system Python of Alibaba Cloud Linux 3 (3.6) and Ubuntu.
"""

import argparse
import hashlib
import hmac
import logging
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

logger = logging.getLogger("ollama-auth")

# Internet scanners can send many bad requests a second; log at most one line per
# interval and count the rest.
REJECTION_LOG_INTERVAL_SECONDS = 10.0


def make_handler(expected_sha256):
    """Return a request handler class that accepts the key whose hash is expected_sha256."""

    rejections = {"last_logged": 0.0, "suppressed": 0}

    class AuthHandler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - name fixed by BaseHTTPRequestHandler
            # CORS preflight requests carry no credentials; Ollama handles them itself.
            if self.headers.get("X-Original-Method", "") == "OPTIONS":
                self.reply(200)
                return

            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            digest = hashlib.sha256(token.strip().encode()).hexdigest()
            if scheme.lower() == "bearer" and token and hmac.compare_digest(digest, expected_sha256):
                self.reply(200)
                return

            self.log_rejection("wrong key" if token else "no Bearer key")
            self.reply(401)

        def log_rejection(self, reason):
            now = time.monotonic()
            if now - rejections["last_logged"] < REJECTION_LOG_INTERVAL_SECONDS:
                rejections["suppressed"] += 1
                return
            logger.warning("rejected request %s %s from %s: %s (%d more rejected since the last line)",
                           self.headers.get("X-Original-Method", "?"), self.headers.get("X-Original-URI", "?"),
                           self.headers.get("X-Real-IP", "?"), reason, rejections["suppressed"])
            rejections["last_logged"] = now
            rejections["suppressed"] = 0

        def reply(self, status):
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="ollama"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
            # Successful checks are not logged: one per API request would flood the journal.
            pass

    return AuthHandler


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hash-file", required=True, help="file with the hex SHA-256 of the API key")
    parser.add_argument("--listen", default="127.0.0.1:11436", help="host:port to listen on (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    with open(args.hash_file) as hash_file:
        expected = hash_file.read().strip().lower()
    if len(expected) != 64:
        logger.error("invalid key hash in %s: expected 64 hex characters", args.hash_file)
        return 2

    host, _, port = args.listen.rpartition(":")
    server = HTTPServer((host, int(port)), make_handler(expected))
    logger.info("checking API keys on %s", args.listen)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
