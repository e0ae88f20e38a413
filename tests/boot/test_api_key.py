"""Boot tests of the API key: nginx in front of Ollama, over real HTTP inside the machine.

The machine boots the user-data of a stack with `apiKey` set and 11434 open to the
world, as a user would deploy it. Every request below goes to 127.0.0.1 inside the
machine's own network namespace.
"""

from __future__ import annotations

import json
import shlex

import pytest

import machine
import testbed
from testbed import MODEL

pytestmark = pytest.mark.boot

API_KEY = "boot-test-api-key-0123456789abcdef0123456789abcdef"
PROXY = "http://127.0.0.1:11434"
MANAGEMENT = (("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/create"), ("POST", "/api/copy"),
              ("DELETE", "/api/delete"), ("POST", "/api/blobs/sha256:00"))


def http_status(node: machine.Machine, method: str, path: str, key: str | None, body: str = "{}") -> int:
    """Send one request through the proxy inside the machine; return the HTTP status."""
    auth = f"-H {shlex.quote('Authorization: Bearer ' + key)}" if key is not None else ""
    data = f"-d {shlex.quote(body)}" if method not in ("GET", "HEAD") else ""
    output = node.shell(f"curl -s -o /dev/null -w '%{{http_code}}' -X {method} {auth} {data} {PROXY}{path}",
                        check=False).stdout
    return int(output.strip() or 0)


def boot_with_key(boot_session, name: str, serial: str, **overrides):
    bed = boot_session.new_testbed(name)
    disk = bed.new_disk(serial)
    disk.attach()
    settings = testbed.test_stack_settings(apiKey=API_KEY, allowedCidrs=["0.0.0.0/0"], **overrides)
    node = bed.launch(settings, disk)
    return bed, node, node.wait_for_bootstrap()


@pytest.fixture(scope="module")
def keyed_boot(boot_session):
    """One instance booted with an API key and the default inference-only proxy."""
    bed, node, status = None, None, None
    try:
        bed, node, status = boot_with_key(boot_session, "api-key", "bp1apikey00001")
        yield bed, node, status
    finally:
        if bed is not None:
            bed.close()


@pytest.fixture
def keyed(keyed_boot, request):
    request.node.boot_testbed = keyed_boot[0]
    return keyed_boot


def test_keyed_boot_reaches_ready(keyed):
    _, _, status = keyed

    assert status["state"] == "ready", status
    assert status["phases"]["proxy"]["state"] == "done"


def test_proxy_requires_right_key(keyed):
    _, node, _ = keyed

    assert http_status(node, "GET", "/api/tags", None) == 401
    assert http_status(node, "GET", "/api/tags", API_KEY + "x") == 401
    assert http_status(node, "GET", "/api/tags", "") == 401
    assert http_status(node, "GET", "/api/tags", API_KEY) == 200


def test_proxy_streams_chat_in_chunks(keyed):
    _, node, _ = keyed
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True})

    output = node.shell(f"curl -sN -w '\\n%{{http_code}}' -H {shlex.quote('Authorization: Bearer ' + API_KEY)} "
                        f"-d {shlex.quote(body)} {PROXY}/api/chat").stdout
    *lines, status = output.splitlines()

    assert status == "200", output
    chunks = [json.loads(line) for line in lines if line.strip()]
    assert len(chunks) >= 3, output
    assert chunks[-1]["done"] is True


def test_management_endpoints_forbidden(keyed):
    _, node, _ = keyed

    for method, path in MANAGEMENT:
        assert http_status(node, method, path, API_KEY) == 403, f"{method} {path}"


def test_ollama_listens_on_loopback_only(keyed):
    _, node, _ = keyed

    listeners = node.shell("ss -Hltnp").stdout.splitlines()
    ollama = [line for line in listeners if ":11435 " in line]
    public = [line for line in listeners if ":11434 " in line]

    assert ollama, f"nothing listens on 11435: {listeners}"
    for line in ollama:
        assert line.split()[3] == "127.0.0.1:11435", line
    assert public, f"nothing listens on 11434: {listeners}"
    for line in public:
        assert "nginx" in line, f"11434 must be served by nginx only: {line}"


def test_api_key_not_on_instance(keyed):
    _, node, _ = keyed

    found_files = node.shell(f"grep -rlF {shlex.quote(API_KEY)} /etc /var/lib /var/log /run /opt 2>/dev/null",
                             check=False).stdout.strip()
    journal = node.shell(f"journalctl --no-pager -o cat | grep -cF {shlex.quote(API_KEY)}", check=False).stdout

    assert found_files == "", f"the API key is stored in plain text: {found_files}"
    assert journal.strip() == "0", "the API key appears in the journal"


def test_management_allowed_when_enabled(boot_session, request):
    bed = None
    try:
        bed, node, status = boot_with_key(boot_session, "api-key-management", "bp1apikey00002",
                                          allowModelManagement=True)
        request.node.boot_testbed = bed
        copy = json.dumps({"source": MODEL, "destination": "copied:latest"})

        assert status["state"] == "ready", status
        assert http_status(node, "POST", "/api/copy", API_KEY, copy) == 200
        assert http_status(node, "POST", "/api/copy", None, copy) == 401
    finally:
        if bed is not None:
            bed.close()
