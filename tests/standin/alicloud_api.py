#!/usr/bin/env python3
"""Stand-ins for the ECS instance metadata service and the ECS API, on 127.0.0.1 only.

The idle-stop script on the instance reads its instance ID and the RAM role's temporary
credentials from the metadata service, then calls StopInstance. These stand-ins answer
those requests the way Alibaba Cloud documents them, check the request signature with an
implementation of their own, and record every StopInstance call, so tests can count them.

Command line (for tests that run it as a separate process):
    alicloud_api.py --metadata-port 18100 --ecs-port 18101 --calls /tmp/calls.jsonl
Each accepted or rejected StopInstance call is appended to --calls as one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LOOPBACK = "127.0.0.1"
INSTANCE_ID = "i-standin0idle0stop"
ROLE_NAME = "ollama-alicloud-boottest-idle-stop"
ACCESS_KEY_ID = "STS.standinAccessKeyId"
ACCESS_KEY_SECRET = "standinAccessKeySecret"
SECURITY_TOKEN = "standinSecurityToken+/="
# An operator's own access key, as scripts/wake.py uses it (no security token).
USER_ACCESS_KEY_ID = "LTAIstandinUserKey"
USER_ACCESS_KEY_SECRET = "standinUserSecret"
# Access key ID -> (secret, security token or None).
CREDENTIALS = {ACCESS_KEY_ID: (ACCESS_KEY_SECRET, SECURITY_TOKEN), USER_ACCESS_KEY_ID: (USER_ACCESS_KEY_SECRET, None)}
TOKEN_HEADER = "X-aliyun-ecs-metadata-token"
TOKEN_TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"

log = logging.getLogger("alicloud-standin")


def _encode(text: str) -> str:
    """Percent-encode byte by byte; only A-Z a-z 0-9 - _ . ~ stay literal (the documented rule)."""
    unreserved = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
    return "".join(chr(byte) if byte in unreserved else f"%{byte:02X}" for byte in text.encode())


def expected_signature(params: dict[str, str], secret: str) -> str:
    """Return the signature (version 1.0, HMAC-SHA1) that ECS expects for these parameters."""
    canonical = "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(params.items()))
    string_to_sign = f"GET&{_encode('/')}&{_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class StandinState:
    """What the stand-ins answer and what they recorded."""

    role_name: str = ROLE_NAME
    instance_id: str = INSTANCE_ID
    require_token: bool = False
    """Hardened metadata mode: every read needs a token from PUT /latest/api/token."""
    ecs_error: tuple[int, str] | None = None
    """When set, StopInstance fails with this HTTP status and error code."""
    calls_file: Path | None = None
    instance_status: str = "Running"
    """Status DescribeInstances reports; StopInstance and StartInstance change it."""
    public_ip: str = LOOPBACK
    stop_calls: list[dict[str, str]] = field(default_factory=list)
    start_calls: list[dict[str, str]] = field(default_factory=list)
    rejected_calls: list[dict[str, Any]] = field(default_factory=list)
    metadata_paths: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, entry: dict[str, Any]) -> None:
        if self.calls_file is not None:
            with self.lock, self.calls_file.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")


class _Handler(BaseHTTPRequestHandler):
    state: StandinState

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class MetadataHandler(_Handler):
    """GET /latest/meta-data/instance-id and .../ram/security-credentials/<role>; PUT /latest/api/token."""

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/latest/api/token" or not self.headers.get(TOKEN_TTL_HEADER):
            self._reply(400, "bad token request")
            return
        token = f"token-{len(self.state.tokens)}"
        self.state.tokens.add(token)
        self._reply(200, token)

    def do_GET(self) -> None:  # noqa: N802
        state = self.state
        state.metadata_paths.append(self.path)
        if state.require_token and self.headers.get(TOKEN_HEADER) not in state.tokens:
            self._reply(401, "metadata token required")
            return

        if self.path == "/latest/meta-data/instance-id":
            self._reply(200, state.instance_id)
        elif self.path == f"/latest/meta-data/ram/security-credentials/{state.role_name}":
            self._reply(200, json.dumps({
                "AccessKeyId": ACCESS_KEY_ID,
                "AccessKeySecret": ACCESS_KEY_SECRET,
                "SecurityToken": SECURITY_TOKEN,
                "Expiration": "2099-01-01T00:00:00Z",
                "LastUpdated": "2026-01-01T00:00:00Z",
                "Code": "Success",
            }), "application/json")
        else:
            self._reply(404, "not found")


class EcsApiHandler(_Handler):
    """GET /?Action=StopInstance|StartInstance|DescribeInstances&...: checks signature, key and instance."""

    def do_GET(self) -> None:  # noqa: N802
        state = self.state
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        problem = self._problem(params)
        if problem is None and state.ecs_error is not None:
            problem = state.ecs_error

        if problem is not None:
            status, code = problem
            entry = {"accepted": False, "code": code, "params": params}
            state.rejected_calls.append(entry)
            state.record(entry)
            self._reply(status, json.dumps({"Code": code, "Message": code, "RequestId": "standin"}),
                        "application/json")
            return

        action = params["Action"]
        if action == "DescribeInstances":
            self._reply(200, json.dumps(self._describe()), "application/json")
            return
        if action == "StopInstance":
            state.stop_calls.append(params)
            state.instance_status = "Stopped"
        else:
            if state.instance_status != "Stopped":
                self._reply(403, json.dumps({"Code": "IncorrectInstanceStatus", "Message": "not stopped"}),
                            "application/json")
                return
            state.start_calls.append(params)
            state.instance_status = "Running"
        state.record({"accepted": True, "params": params})
        self._reply(200, json.dumps({"RequestId": f"standin-{action}"}), "application/json")

    def _describe(self) -> dict[str, Any]:
        state = self.state
        return {"Instances": {"Instance": [{
            "InstanceId": state.instance_id,
            "Status": state.instance_status,
            "PublicIpAddress": {"IpAddress": [state.public_ip]},
            "EipAddress": {"IpAddress": ""},
        }]}}

    def _problem(self, params: dict[str, str]) -> tuple[int, str] | None:
        signature = params.pop("Signature", "")
        if params.get("Action") not in ("StopInstance", "StartInstance", "DescribeInstances"):
            return 400, "InvalidAction.NotFound"
        secret, token = CREDENTIALS.get(params.get("AccessKeyId", ""), (None, None))
        if secret is None or params.get("SecurityToken") != token:
            return 403, "InvalidAccessKeyId.NotFound"
        if not hmac.compare_digest(signature, expected_signature(params, secret)):
            return 400, "SignatureDoesNotMatch"
        if params["Action"] == "DescribeInstances":
            instance_ids = json.loads(params.get("InstanceIds", "[]"))
            return None if instance_ids == [self.state.instance_id] else (400, "InvalidInstanceIds.Malformed")
        if params.get("InstanceId") != self.state.instance_id:
            # The role's policy allows StopInstance on its own instance only.
            return 403, "Forbidden.RAM"
        return None


class AlicloudStandin:
    """Both stand-ins, started on ephemeral or given ports of 127.0.0.1; use as a context manager."""

    def __init__(self, state: StandinState | None = None, metadata_port: int = 0, ecs_port: int = 0) -> None:
        self.state = state or StandinState()
        self.servers = [
            ThreadingHTTPServer((LOOPBACK, metadata_port), type("Metadata", (MetadataHandler,), {"state": self.state})),
            ThreadingHTTPServer((LOOPBACK, ecs_port), type("EcsApi", (EcsApiHandler,), {"state": self.state})),
        ]
        # A short poll interval makes shutdown() return quickly.
        self.threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
                        for server in self.servers]

    @property
    def metadata_url(self) -> str:
        return f"http://{LOOPBACK}:{self.servers[0].server_address[1]}"

    @property
    def ecs_url(self) -> str:
        return f"http://{LOOPBACK}:{self.servers[1].server_address[1]}"

    def __enter__(self) -> AlicloudStandin:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata-port", type=int, required=True, help="TCP port of the metadata stand-in")
    parser.add_argument("--ecs-port", type=int, required=True, help="TCP port of the ECS API stand-in")
    parser.add_argument("--calls", type=Path, required=True, help="JSON-lines file that records StopInstance calls")
    parser.add_argument("--instance-id", default=INSTANCE_ID, help="instance ID the metadata service reports")
    parser.add_argument("--role", default=ROLE_NAME, help="RAM role name whose credentials are served")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    state = StandinState(role_name=args.role, instance_id=args.instance_id, calls_file=args.calls)
    standin = AlicloudStandin(state, args.metadata_port, args.ecs_port)
    log.info("metadata at %s, ECS API at %s", standin.metadata_url, standin.ecs_url)
    with standin:
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
