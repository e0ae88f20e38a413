#!/usr/bin/env python3
"""Stop this instance in economical mode after IDLE_STOP_MINUTES without Ollama activity.

ollama-idle-stop.timer runs this once a minute. Each run compares Ollama's loaded models
(GET /api/ps) with the previous run's: a newly loaded model, and a changed expires_at
(Ollama moves it forward after every request it serves), count as activity, and so do a
bootstrap still in progress and an SSH login. Once the instance has been idle long
enough, it calls the ECS API StopInstance with StoppedMode=StopCharging, signed with the
temporary credentials of the instance RAM role from the metadata service.

Test knob: IDLE_STOP_SECONDS in the environment, when set, replaces IDLE_STOP_MINUTES x 60
as the idle period. The boot tests set it in a systemd drop-in so that an idle stop
happens within seconds. The user-data never sets it.

Standard library only, and Python 3.6 syntax: cloud-init runs on the image's python3,
which is 3.6 on Alibaba Cloud Linux 3. The `aliyun` CLI would need a download at boot
because neither Alibaba Cloud Linux 3 nor Ubuntu carries it in its default repositories.

Exit codes: 0 checked (and stopped, when idle), 1 the stop request failed, 2 bad config.
"""

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

CONFIG_PATH = os.environ.get("BOOTSTRAP_CONFIG", "/etc/ollama-bootstrap/bootstrap.env")
BOOTSTRAP_STATUS = os.path.join(os.environ.get("BOOTSTRAP_STATE_DIR", "/var/lib/ollama-bootstrap"), "status.json")
# Under /run, so it is empty after every boot: a started instance gets a full idle period.
STATE_PATH = os.environ.get("IDLE_STOP_STATE", "/run/ollama-idle-stop/state.json")

ECS_API_VERSION = "2014-05-26"
# A stop takes a minute or two; within this many seconds a second request is not sent.
STOP_RETRY_SECONDS = 600
HTTP_TIMEOUT_SECONDS = 10
METADATA_TOKEN_TTL_SECONDS = 300

log = logging.getLogger("ollama-idle-stop")


class StopError(RuntimeError):
    """Raised when the credentials or the StopInstance call fail."""


def read_env_file(path):
    """Return the KEY="value" pairs of bootstrap.env as a dict."""
    values = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


def percent_encode(text):
    """Encode as the ECS RPC signature requires: only A-Z a-z 0-9 - _ . ~ stay literal."""
    return urllib.parse.quote(str(text), safe="-_.~")


def rpc_signature(params, secret, method="GET"):
    """Return the HMAC-SHA1 signature (version 1.0) of ECS RPC request parameters."""
    canonical = "&".join(
        "{}={}".format(percent_encode(key), percent_encode(params[key])) for key in sorted(params)
    )
    string_to_sign = "{}&{}&{}".format(method, percent_encode("/"), percent_encode(canonical))
    digest = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def http_request(url, method="GET", headers=None, data=None):
    """Return (status, body text); HTTP error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


class Metadata:
    """Client of the instance metadata service, in hardened (token) mode when it offers one."""

    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/")
        self.headers = {}

    def fetch_token(self):
        try:
            status, body = http_request(
                self.base_url + "/latest/api/token", method="PUT",
                headers={"X-aliyun-ecs-metadata-token-ttl-seconds": str(METADATA_TOKEN_TTL_SECONDS)})
        except (OSError, urllib.error.URLError) as error:
            log.info("metadata token not available (%s); using plain requests", error)
            return
        if status == 200 and body:
            self.headers = {"X-aliyun-ecs-metadata-token": body.strip()}
        else:
            log.info("metadata token not available (HTTP %s); using plain requests", status)

    def get(self, path):
        try:
            status, body = http_request(self.base_url + path, headers=self.headers)
        except (OSError, urllib.error.URLError) as error:
            raise StopError("metadata service {} failed: {}".format(self.base_url + path, error))
        if status != 200:
            raise StopError("metadata service {} returned HTTP {}: {}".format(path, status, body[:200]))
        return body.strip()


def stop_instance(config):
    """Call StopInstance on this instance with StoppedMode=StopCharging; raise StopError on failure."""
    metadata = Metadata(config["INSTANCE_METADATA_URL"])
    metadata.fetch_token()
    instance_id = metadata.get("/latest/meta-data/instance-id")
    role = config["IDLE_STOP_ROLE"]
    try:
        credentials = json.loads(metadata.get("/latest/meta-data/ram/security-credentials/" + role))
    except ValueError as error:
        raise StopError("credentials of role {} are not JSON: {}".format(role, error))
    if credentials.get("Code", "Success") != "Success" or "AccessKeyId" not in credentials:
        raise StopError("no credentials for role {}: {}".format(role, credentials.get("Code")))

    params = {
        "Action": "StopInstance",
        "InstanceId": instance_id,
        # Economical mode: the instance stops being billed; its disks still are.
        "StoppedMode": "StopCharging",
        "ForceStop": "false",
        "Format": "JSON",
        "Version": ECS_API_VERSION,
        "AccessKeyId": credentials["AccessKeyId"],
        "SecurityToken": credentials["SecurityToken"],
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": str(uuid.uuid4()),
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    params["Signature"] = rpc_signature(params, credentials["AccessKeySecret"])
    query = "&".join("{}={}".format(percent_encode(key), percent_encode(value)) for key, value in params.items())
    url = config["ECS_API_ENDPOINT"].rstrip("/") + "/?" + query
    try:
        status, body = http_request(url)
    except (OSError, urllib.error.URLError) as error:
        raise StopError("ECS API {} failed: {}".format(config["ECS_API_ENDPOINT"], error))
    if status != 200:
        raise StopError("StopInstance {} returned HTTP {}: {}".format(instance_id, status, body[:300]))
    log.info("StopInstance %s accepted (StopCharging): %s", instance_id, body[:200])


def bootstrap_state():
    try:
        with open(BOOTSTRAP_STATUS) as handle:
            return json.load(handle).get("state")
    except (OSError, ValueError):
        return None


def ollama_models(config):
    """Return [(name, expires_at, size_vram)] of loaded models, or None when Ollama does not answer."""
    port = config.get("OLLAMA_BIND", "127.0.0.1:11434").rsplit(":", 1)[-1]
    try:
        status, body = http_request("http://127.0.0.1:{}/api/ps".format(port))
        if status != 200:
            log.info("Ollama API returned HTTP %s", status)
            return None
        models = json.loads(body).get("models") or []
    except (OSError, urllib.error.URLError, ValueError) as error:
        log.info("Ollama API not answering: %s", error)
        return None
    return sorted([model.get("name"), model.get("expires_at"), model.get("size_vram")] for model in models)


def ssh_sessions():
    try:
        output = subprocess.run(["who"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10,
                                check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len([line for line in output.decode(errors="replace").splitlines() if line.strip()])


def activity_reason(state, models):
    """Return why the instance counts as busy now, or None when nothing happened since the last run.

    NOTE: Ollama moves expires_at when a request ends, so one generation that runs
    longer than IDLE_STOP_MINUTES, with no other request, is not seen as activity.
    """
    if bootstrap_state() == "running":
        return "bootstrap running"
    if models is not None and models != state.get("models"):
        return "Ollama served a request or loaded a model"
    sessions = ssh_sessions()
    if sessions:
        return "{} login session(s)".format(sessions)
    return None


def load_state(now):
    try:
        with open(STATE_PATH) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {"last_activity": now, "models": None, "stop_requested_at": None}


def save_state(state):
    directory = os.path.dirname(STATE_PATH)
    os.makedirs(directory, exist_ok=True)
    temporary = STATE_PATH + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(state, handle)
    os.replace(temporary, STATE_PATH)


def check(config, now, idle_limit):
    """Run one check against an idle period of idle_limit seconds and return the exit code."""
    state = load_state(now)

    requested = state.get("stop_requested_at")
    if requested and now - requested < STOP_RETRY_SECONDS:
        log.info("stop requested %d s ago; waiting for the instance to stop", now - requested)
        return 0

    models = ollama_models(config)
    reason = activity_reason(state, models)
    state["models"] = models
    # For operators and tests: when the last check ran and why it counted as busy.
    state["last_check"] = now
    state["last_busy_reason"] = reason
    if reason:
        state["last_activity"] = now
        log.info("busy: %s", reason)
    idle = now - state["last_activity"]

    if idle < idle_limit:
        if not reason:
            log.info("idle for %d s of %d s", idle, idle_limit)
        save_state(state)
        return 0

    log.info("idle for %d s (limit %d s); stopping the instance", idle, idle_limit)
    try:
        stop_instance(config)
    except StopError as error:
        save_state(state)
        log.error("stop failed, retrying at the next check: %s", error)
        return 1
    state["stop_requested_at"] = now
    save_state(state)
    return 0


def main():
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s %(message)s")
    try:
        config = read_env_file(CONFIG_PATH)
        for key in ("IDLE_STOP_MINUTES", "IDLE_STOP_ROLE", "ECS_API_ENDPOINT", "INSTANCE_METADATA_URL"):
            if not config.get(key):
                raise KeyError(key)
        if int(config["IDLE_STOP_MINUTES"]) <= 0:
            log.info("IDLE_STOP_MINUTES is %s; idle stop is off", config["IDLE_STOP_MINUTES"])
            return 0
    except (OSError, KeyError, ValueError) as error:
        log.error("invalid config %s: missing or bad %s", CONFIG_PATH, error)
        return 2

    idle_limit = int(config["IDLE_STOP_MINUTES"]) * 60
    override = os.environ.get("IDLE_STOP_SECONDS")
    if override is not None:
        if not override.isdigit() or int(override) <= 0:
            log.error("invalid IDLE_STOP_SECONDS %r: expected a whole number of seconds above 0", override)
            return 2
        idle_limit = int(override)
        log.info("IDLE_STOP_SECONDS=%d replaces IDLE_STOP_MINUTES=%s", idle_limit, config["IDLE_STOP_MINUTES"])
    return check(config, time.time(), idle_limit)


if __name__ == "__main__":
    sys.exit(main())
