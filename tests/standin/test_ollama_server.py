"""Checks of the stand-in Ollama server against the official `ollama` Python client.

The client validates every reply with its own pydantic models, so a field the
stand-in gets wrong (a missing key, a wrong type, a broken stream) fails here
instead of in a boot test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ollama_server as standin  # noqa: E402

SERVER_FILE = Path(__file__).resolve().parent / "ollama_server.py"


class Running:
    """A stand-in server serving from a thread, with a client bound to it."""

    def __init__(self, config: standin.Config):
        self.server = standin.make_server(config)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.client = ollama.Client(host=self.url, timeout=30)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def start(tmp_path):
    """Start stand-in servers on free loopback ports; stop them after the test."""
    running: list[Running] = []

    def _start(**overrides) -> Running:
        # Small models keep each pull to milliseconds; tests that need size set model_size.
        config = standin.Config(host="127.0.0.1", port=0, models_dir=tmp_path / "models",
                                model_size=standin.parse_per_model(None, 64 * 1024),
                                load_seconds=standin.parse_per_model(None, 0.01))
        config = dataclasses.replace(config, **overrides)
        server = Running(config)
        running.append(server)
        return server

    yield _start
    for server in running:
        server.stop()


@pytest.fixture
def registry():
    """Start the stand-in registry on a free loopback port and return its host:port."""
    server = standin.make_registry({"OLLAMA_STANDIN_REGISTRY_HOST": "127.0.0.1:0",
                                    "OLLAMA_STANDIN_REGISTRY_MODELS": "library/tiny:1b",
                                    "OLLAMA_STANDIN_MODEL_SIZE": str(600 * 1024)})
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_root_and_version(start):
    server = start(version="9.8.7")

    root = httpx.get(server.url + "/")
    head = httpx.head(server.url + "/")

    assert root.status_code == 200
    assert root.text == "Ollama is running"
    assert head.status_code == 200
    assert httpx.get(server.url + "/api/version").json() == {"version": "9.8.7"}


def test_stream_lines_are_compact_json(start):
    """Guards the bootstrap's shell parser, which matches '"status":"success"' as Go writes it."""
    server = start(model_size=standin.parse_per_model(None, 1000))

    with httpx.stream("POST", server.url + "/api/pull", json={"model": "qwen3:8b"}) as response:
        lines = [line for line in response.iter_lines() if line]

    assert lines[-1] == '{"status":"success"}'
    assert all(": " not in line and ", " not in line for line in lines)


def test_pull_stream_reports_real_progress(start):
    server = start(model_size=standin.parse_per_model(None, 1_000_000))

    parts = list(server.client.pull("qwen3:8b", stream=True))
    statuses = [p.status for p in parts]
    layer_parts = [p for p in parts if p.digest]

    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert all(s.startswith("pulling ") for s in statuses[1:-3])
    assert layer_parts
    assert all(p.digest.startswith("sha256:") for p in layer_parts)
    weights = [p for p in layer_parts if p.total == 1_000_000]
    assert weights[0].completed == 0
    assert weights[-1].completed == 1_000_000
    assert weights[0].status == "pulling " + weights[0].digest[7:19]


def test_pulled_model_listed_after_restart(start):
    first = start(model_size=standin.parse_per_model(None, 200_000))
    first.client.pull("qwen3:8b")
    first.stop()

    second = start()
    models = second.client.list().models
    blobs = sorted(p.name for p in (second.server.RequestHandlerClass.state.store.blobs).iterdir())

    assert [m.model for m in models] == ["qwen3:8b"]
    assert models[0].size > 200_000
    assert models[0].details.format == "gguf"
    assert models[0].details.parameter_size == "8.0B"
    assert len(blobs) == 2
    assert all(b.startswith("sha256-") for b in blobs)


def test_pull_from_registry_then_copy(start, registry):
    server = start()
    source = f"{registry}/library/tiny:1b"

    parts = list(server.client.pull(source, insecure=True, stream=True))
    server.client.copy(source, "tiny:1b")
    names = sorted(m.model for m in server.client.list().models)

    assert parts[-1].status == "success"
    assert max(p.total or 0 for p in parts) == 600 * 1024
    assert names == sorted([source, "tiny:1b"])


def test_pull_unknown_registry_model_fails(start, registry):
    server = start()

    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        list(server.client.pull(f"{registry}/library/missing:1b", insecure=True, stream=True))


def test_pull_fail_knob_streams_error(start):
    server = start(fail_message="max retries exceeded: connection reset by peer")

    with pytest.raises(ollama.ResponseError, match="connection reset by peer"):
        list(server.client.pull("qwen3:8b", stream=True))
    with pytest.raises(ollama.ResponseError) as not_streamed:
        server.client.pull("qwen3:8b", stream=False)

    assert not_streamed.value.status_code == 500
    assert server.client.list().models == []


def test_pull_resumes_after_midway_failure(start):
    size = 1_000_000
    server = start(model_size=standin.parse_per_model(None, size), fail_message="unexpected EOF",
                   fail_at=0.5, fail_attempts=1)

    with pytest.raises(ollama.ResponseError, match="unexpected EOF"):
        list(server.client.pull("qwen3:8b", stream=True))
    parts = list(server.client.pull("qwen3:8b", stream=True))
    weights = [p for p in parts if p.total == size]

    assert weights[0].completed >= size // 2
    assert parts[-1].status == "success"


def test_pull_stall_knob_pauses_progress(start):
    server = start(model_size=standin.parse_per_model(None, 1_000_000), stall_seconds=0.6, stall_attempts=1)

    gaps, last = [], time.monotonic()
    for _part in server.client.pull("qwen3:8b", stream=True):
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    started = time.monotonic()
    server.client.delete("qwen3:8b")
    for blob in server.server.RequestHandlerClass.state.store.blobs.iterdir():
        blob.unlink()
    list(server.client.pull("qwen3:8b", stream=True))

    assert max(gaps) >= 0.5
    assert time.monotonic() - started < 0.5, "the second attempt must not stall"


def test_pull_speed_knob_paces_download(start):
    server = start(model_size=standin.parse_per_model(None, 400_000), pull_seconds=0.5)

    started = time.monotonic()
    server.client.pull("qwen3:8b")

    assert 0.4 <= time.monotonic() - started < 3


def test_chat_not_streamed_has_timings(start):
    server = start(eval_count=10, eval_rate=standin.parse_per_model(None, 50.0))
    server.client.pull("qwen3:8b")

    reply = server.client.chat("qwen3:8b", messages=[{"role": "user", "content": "Say hi"}])

    assert reply.done is True
    assert reply.done_reason == "stop"
    assert reply.message.role == "assistant"
    assert reply.message.content
    assert reply.eval_count == 10
    assert reply.eval_duration == 200_000_000
    assert reply.prompt_eval_count > 0
    assert reply.prompt_eval_duration > 0
    assert reply.load_duration > 0
    assert reply.total_duration >= reply.load_duration + reply.eval_duration


def test_chat_streamed_ends_with_final_chunk(start):
    server = start(eval_count=5)
    server.client.pull("qwen3:8b")

    chunks = list(server.client.chat("qwen3:8b", messages=[{"role": "user", "content": "Hi"}], stream=True))

    assert [c.done for c in chunks] == [False] * 5 + [True]
    assert "".join(c.message.content for c in chunks).split() == standin.ANSWER_WORDS[:5]
    assert chunks[-1].eval_count == 5
    assert chunks[-1].eval_duration > 0


def test_chat_unknown_model_is_404(start):
    server = start()

    with pytest.raises(ollama.ResponseError) as error:
        server.client.chat("nope:1b", messages=[{"role": "user", "content": "Hi"}])

    assert error.value.status_code == 404
    assert "try pulling it first" in error.value.error


def test_generate_with_prompt_and_num_predict(start):
    server = start(eval_count=30)
    server.client.pull("qwen3:8b")

    reply = server.client.generate("qwen3:8b", prompt="Why is the sky blue?", options={"num_predict": 7})
    streamed = list(server.client.generate("qwen3:8b", prompt="Why?", stream=True))

    assert reply.eval_count == 7
    assert len(reply.response.split()) == 7
    assert streamed[-1].done is True
    assert streamed[-1].eval_count == 30


def test_generate_without_prompt_only_loads(start):
    server = start(gpu="on", load_seconds=standin.parse_per_model(None, 0.3))
    server.client.pull("qwen3:8b")

    started = time.monotonic()
    reply = server.client.generate("qwen3:8b", keep_alive="1h")
    loaded = server.client.ps().models

    assert time.monotonic() - started >= 0.3
    assert reply.done is True
    assert reply.done_reason == "load"
    assert reply.response == ""
    assert [m.model for m in loaded] == ["qwen3:8b"]
    assert loaded[0].size_vram == loaded[0].size > 0


def test_warm_model_reports_short_load(start):
    server = start(load_seconds=standin.parse_per_model(None, 0.2))
    server.client.pull("qwen3:8b")

    cold = server.client.generate("qwen3:8b", prompt="a")
    warm = server.client.generate("qwen3:8b", prompt="a")

    assert cold.load_duration == 200_000_000
    assert warm.load_duration < 50_000_000


def test_keep_alive_zero_unloads(start):
    server = start(load_seconds=standin.parse_per_model(None, 0.05))
    server.client.pull("qwen3:8b")

    server.client.generate("qwen3:8b", prompt="a", keep_alive=0)
    after = server.client.ps().models
    again = server.client.generate("qwen3:8b", prompt="a", keep_alive=0)

    assert after == []
    assert again.load_duration == 50_000_000


@pytest.mark.parametrize(("gpu", "smi_exit", "expect_vram"), [
    ("auto", 0, True),
    ("auto", 9, False),
    ("auto", None, False),
    ("on", None, True),
    ("off", 0, False),
])
def test_ps_vram_follows_nvidia_smi(start, tmp_path, monkeypatch, gpu, smi_exit, expect_vram):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if smi_exit is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\nexit {smi_exit}\n")
        smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    server = start(gpu=gpu)
    server.client.pull("qwen3:8b")

    server.client.generate("qwen3:8b")
    model = server.client.ps().models[0]

    assert model.size > 0
    assert model.size_vram == (model.size if expect_vram else 0)


def test_ps_partial_offload(start):
    server = start(gpu="partial")
    server.client.pull("qwen3:8b")

    server.client.generate("qwen3:8b")
    model = server.client.ps().models[0]

    assert 0 < model.size_vram < model.size


def test_show_returns_details(start):
    server = start()
    server.client.pull("qwen3:8b")

    shown = server.client.show("qwen3:8b")

    assert shown.details.family == "qwen"
    assert shown.capabilities == ["completion"]


def test_openai_chat_completions(start):
    server = start(eval_count=6)
    server.client.pull("qwen3:8b")
    body = {"model": "qwen3:8b", "messages": [{"role": "user", "content": "Hi"}]}

    plain = httpx.post(server.url + "/v1/chat/completions", json=body).json()
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**body, "stream": True}) as response:
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events[:-1]]
    models = httpx.get(server.url + "/v1/models").json()

    assert plain["object"] == "chat.completion"
    assert plain["choices"][0]["message"]["role"] == "assistant"
    assert plain["choices"][0]["finish_reason"] == "stop"
    assert plain["usage"]["completion_tokens"] == 6
    assert events[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).split() == standin.ANSWER_WORDS[:6]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["qwen3:8b"]


def test_openai_unknown_model_error_shape(start):
    server = start()

    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})

    assert response.status_code == 404
    assert "not found" in response.json()["error"]["message"]


def test_api_key_knob_requires_bearer(start):
    server = start(api_key="s3cret")
    authorized = ollama.Client(host=server.url, headers={"Authorization": "Bearer s3cret"})

    with pytest.raises(ollama.ResponseError) as error:
        server.client.list()

    assert error.value.status_code == 401
    assert httpx.get(server.url + "/").status_code == 200
    assert authorized.list().models == []


@pytest.mark.parametrize(("text", "expected"), [
    ("", ("127.0.0.1", 11434)),
    ("0.0.0.0:11434", ("0.0.0.0", 11434)),
    ("0.0.0.0", ("0.0.0.0", 11434)),
    (":8080", ("127.0.0.1", 8080)),
    ("http://127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("[::1]:7000", ("::1", 7000)),
])
def test_parse_bind_ollama_host_forms(text, expected):
    assert standin.parse_bind(text, 11434) == expected


@pytest.mark.parametrize(("value", "seconds"), [
    ("5m", 300.0), ("1h30m", 5400.0), ("0", 0.0), (0, 0.0), ("-1", float("inf")), ("250ms", 0.25),
])
def test_parse_duration_go_forms(value, seconds):
    assert standin.parse_duration(value, 1.0) == seconds


def test_cli_version_output():
    result = subprocess.run([sys.executable, str(SERVER_FILE), "-v"], capture_output=True, text=True,
                            env={**os.environ, "OLLAMA_STANDIN_VERSION": "0.32.15"}, check=False)

    assert result.returncode == 0
    assert result.stdout.strip() == "ollama version is 0.32.15"


def test_cli_serve_reads_ollama_host_and_models(tmp_path):
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(tmp_path / "store")}
    process = subprocess.Popen([sys.executable, str(SERVER_FILE), "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = ollama.Client(host=f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while True:
            try:
                version = httpx.get(f"http://127.0.0.1:{port}/api/version").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "stand-in did not start within 10 s"
                time.sleep(0.05)
        client.pull("tiny:1b")
        listed = subprocess.run([sys.executable, str(SERVER_FILE), "list"], capture_output=True, text=True,
                                env=env, check=False)
    finally:
        process.terminate()
        process.wait(timeout=5)

    assert version["version"] == standin.DEFAULT_VERSION
    assert (tmp_path / "store" / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "1b").is_file()
    assert "tiny:1b" in listed.stdout


def test_public_host_rejected_on_loopback(start):
    """Guards against a proxy test passing where real Ollama's DNS-rebinding guard answers 403."""
    import http.client as http_client

    port = start().server.server_address[1]
    public = http_client.HTTPConnection("127.0.0.1", port, timeout=10)
    public.request("GET", "/api/tags", headers={"Host": "47.96.1.2:11434"})
    local = http_client.HTTPConnection("127.0.0.1", port, timeout=10)
    local.request("GET", "/api/tags", headers={"Host": "localhost:11434"})

    assert public.getresponse().status == 403
    assert local.getresponse().status == 200


def test_get_body_does_not_poison_next_request(start):
    """Guards against a GET body left unread and parsed as the next kept-alive request."""
    import http.client as http_client

    port = start().server.server_address[1]
    connection = http_client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/api/tags", body=b"{}")
    first = connection.getresponse()
    first.read()
    connection.request("POST", "/api/show", body=b'{"model": "missing:1b"}')
    second = connection.getresponse()

    assert first.status == 200
    assert second.status in (200, 404), second.read()
