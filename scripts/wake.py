#!/usr/bin/env python3
"""Start an instance that the idle-stop timer stopped, and wait until the Ollama API responds.

Calls the ECS API StartInstance with your access key (the variables the Pulumi provider
reads: ALICLOUD_ACCESS_KEY, ALICLOUD_SECRET_KEY and, for STS, ALICLOUD_SECURITY_TOKEN),
waits for the instance to run, reads its public IP again, because an instance stopped in
economical mode can come back with another public IP, and polls GET /api/version.
Requests are signed by the same code the instance uses (components/bootstrap/ollama-idle-stop.py).

The instance ID, region and API key come from the Pulumi stack unless given.

Exit codes: 0 the API responds, 1 the ECS API failed, 2 invalid arguments or stack,
3 timed out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.ops import cli  # noqa: E402 - needs the repository on sys.path
from scripts.ops import stack as pulumi_stack  # noqa: E402

SIGNER_PATH = ROOT / "components" / "bootstrap" / "ollama-idle-stop.py"
ECS_API_VERSION = "2014-05-26"
OLLAMA_PORT = 11434
EXIT_OK, EXIT_API_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3
# StartInstance returns this error code when the instance already runs, which is the goal anyway.
ALREADY_RUNNING = "IncorrectInstanceStatus"

log = logging.getLogger("wake")


class EcsApiError(RuntimeError):
    """Raised when an ECS API call fails; carries the error code ECS returned."""

    def __init__(self, action: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{action} failed (HTTP {status}, {code}): {message}")
        self.code = code


def load_signer() -> Any:
    spec = importlib.util.spec_from_file_location("ollama_idle_stop", SIGNER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EcsClient:
    """Signed GET requests to the ECS RPC API with an access key."""

    def __init__(self, endpoint: str, key_id: str, secret: str, token: str | None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.key_id = key_id
        self.secret = secret
        self.token = token
        self.signer = load_signer()

    def call(self, action: str, **params: str) -> dict[str, Any]:
        request = {
            "Action": action,
            **params,
            "Format": "JSON",
            "Version": ECS_API_VERSION,
            "AccessKeyId": self.key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": str(uuid.uuid4()),
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if self.token:
            request["SecurityToken"] = self.token
        request["Signature"] = self.signer.rpc_signature(request, self.secret)
        encode = self.signer.percent_encode
        query = "&".join(f"{encode(key)}={encode(value)}" for key, value in request.items())
        status, body = self.signer.http_request(f"{self.endpoint}/?{query}")
        try:
            data = json.loads(body or "{}")
        except json.JSONDecodeError:
            data = {"Code": "InvalidResponse", "Message": body[:200]}
        if status != 200:
            raise EcsApiError(action, status, str(data.get("Code")), str(data.get("Message")))
        return data


def describe(client: EcsClient, instance_id: str, region: str) -> tuple[str, str | None]:
    """Return the instance's status and its public IP (None when it has none yet)."""
    data = client.call("DescribeInstances", RegionId=region, InstanceIds=json.dumps([instance_id]))
    instances = data.get("Instances", {}).get("Instance", [])
    if not instances:
        raise EcsApiError("DescribeInstances", 200, "InvalidInstanceId.NotFound", f"{instance_id} not found")
    instance = instances[0]
    addresses = instance.get("PublicIpAddress", {}).get("IpAddress", [])
    eip = instance.get("EipAddress", {}).get("IpAddress")
    return instance.get("Status", ""), eip or (addresses[0] if addresses else None)


def api_answers(url: str, api_key: str | None) -> bool:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(f"{url}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def wait(predicate: Any, deadline: float, interval: float, what: str) -> Any:
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        log.info("waiting for %s", what)
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="Pulumi stack to read instanceId, region and apiKey from")
    parser.add_argument("--instance-id", help="instance to start (default: the stack output instanceId)")
    parser.add_argument("--region", help="region of the instance (default: the stack's alicloud:region)")
    parser.add_argument("--ecs-endpoint", help="ECS API URL (default: https://ecs.<region>.aliyuncs.com)")
    parser.add_argument("--port", type=cli.port_number, default=OLLAMA_PORT, help="Ollama API port (default: 11434)")
    parser.add_argument("--timeout", type=cli.positive_seconds, default=600,
                        help="seconds to wait for the instance and the API (default: 600)")
    parser.add_argument("--interval", type=cli.positive_seconds, default=5,
                        help="seconds between polls (default: 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    key_id = os.environ.get("ALICLOUD_ACCESS_KEY") or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = os.environ.get("ALICLOUD_SECRET_KEY") or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    token = os.environ.get("ALICLOUD_SECURITY_TOKEN") or os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN")
    if not key_id or not secret:
        parser.error("no access key: export ALICLOUD_ACCESS_KEY and ALICLOUD_SECRET_KEY")

    try:
        instance_id = args.instance_id or pulumi_stack.outputs(args.stack)["instanceId"]
        region = args.region or pulumi_stack.config_secret("alicloud:region", args.stack)
        # The key is read only for a stack's own instance; never logged.
        api_key = pulumi_stack.config_secret("apiKey", args.stack) if not args.instance_id else None
    except (pulumi_stack.StackError, KeyError) as error:
        log.error("cannot read the stack: %s; pass --instance-id and --region", error)
        return EXIT_USAGE
    if not region:
        log.error("no region: set alicloud:region in the stack or pass --region")
        return EXIT_USAGE
    endpoint = args.ecs_endpoint or f"https://ecs.{region}.aliyuncs.com"
    client = EcsClient(endpoint, key_id, secret, token)
    deadline = time.monotonic() + args.timeout

    try:
        client.call("StartInstance", InstanceId=instance_id)
        log.info("StartInstance %s accepted", instance_id)
    except EcsApiError as error:
        if error.code != ALREADY_RUNNING:
            log.error("%s", error)
            return EXIT_API_FAILED
        log.info("instance %s is not stopped (%s); waiting for its API", instance_id, error.code)

    def running_ip() -> str | None:
        status, ip = describe(client, instance_id, region)
        return ip if status == "Running" else None

    try:
        running = wait(running_ip, deadline, args.interval, f"{instance_id} to run")
    except EcsApiError as error:
        log.error("%s", error)
        return EXIT_API_FAILED
    if running is None:
        log.error("instance %s not running with a public IP after %.0f s", instance_id, args.timeout)
        return EXIT_TIMEOUT

    url = f"http://{running}:{args.port}"
    if wait(lambda: api_answers(url, api_key), deadline, args.interval, f"the Ollama API at {url}") is None:
        log.error("the Ollama API at %s did not respond within %.0f s", url, args.timeout)
        return EXIT_TIMEOUT

    log.info("the Ollama API responds at %s; if the public IP changed, run `pulumi refresh` to update "
             "the stack outputs", url)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
