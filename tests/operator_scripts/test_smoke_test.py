"""smoke_test.py against the stand-in Ollama server, directly and through a real SSH tunnel."""

from __future__ import annotations

import logging

import ollama
import pytest

import smoke_test
from ops import cli


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)


def pulled(server, model="qwen3:8b", api_key=None):
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    ollama.Client(host=server.url, headers=headers).pull(model)
    return server


def test_gpu_model_passes(start_standin, capsys):
    server = pulled(start_standin(gpu="on"))

    code = smoke_test.main(["--url", server.url, "--model", "qwen3:8b"])
    out = capsys.readouterr().out

    assert code == cli.EXIT_OK
    assert out.count("PASS") == 6
    assert "100% in VRAM" in out


def test_cpu_model_fails(start_standin, capsys):
    """A model that Ollama loaded on the CPU still replies to chats, but must fail the smoke test."""
    server = pulled(start_standin(gpu="off"))

    code = smoke_test.main(["--url", server.url, "--model", "qwen3:8b"])
    out = capsys.readouterr().out

    assert code == cli.EXIT_FAILED
    assert out.count("PASS") == 5
    assert "runs on the CPU (size_vram 0 of" in out


def test_partial_offload_fails(start_standin, capsys):
    server = pulled(start_standin(gpu="partial"))

    code = smoke_test.main(["--url", server.url, "--model", "qwen3:8b"])

    assert code == cli.EXIT_FAILED
    assert "only 50% in VRAM" in capsys.readouterr().out


def test_missing_model_fails(start_standin, capsys):
    server = pulled(start_standin(gpu="on"))

    code = smoke_test.main(["--url", server.url, "--model", "deepseek-r1:32b"])
    out = capsys.readouterr().out

    assert code == cli.EXIT_FAILED
    assert "missing deepseek-r1:32b; installed: qwen3:8b" in out


def test_default_model_is_first_installed(start_standin, capsys):
    server = pulled(start_standin(gpu="on"))

    assert smoke_test.main(["--url", server.url]) == cli.EXIT_OK
    assert "qwen3:8b 100% in VRAM" in capsys.readouterr().out


def test_unreachable_endpoint_skips_rest(start_standin, capsys):
    server = start_standin()
    url = server.url
    server.stop()

    code = smoke_test.main(["--url", url, "--model", "qwen3:8b", "--timeout", "2"])
    out = capsys.readouterr().out

    assert code == cli.EXIT_UNREACHABLE
    assert out.count("SKIP") == 5


def test_api_key_sent_and_never_printed(start_standin, capsys, caplog, monkeypatch):
    secret = "sk-test-0123456789"
    server = pulled(start_standin(gpu="on", api_key=secret), api_key=secret)
    caplog.set_level(logging.DEBUG)

    without_key = smoke_test.main(["--url", server.url, "--model", "qwen3:8b", "-v"])
    monkeypatch.setenv("OLLAMA_API_KEY", secret)
    with_key = smoke_test.main(["--url", server.url, "--model", "qwen3:8b", "-v"])
    captured = capsys.readouterr()

    assert without_key == cli.EXIT_FAILED
    assert "401: the endpoint needs an API key; set OLLAMA_API_KEY or pass --api-key-env" in captured.out
    assert with_key == cli.EXIT_OK
    assert secret not in captured.out
    assert secret not in captured.err
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_through_ssh_tunnel(start_standin, sshd, keys, tmp_path, capsys):
    """With the API port closed to the internet, the smoke test reaches it over SSH."""
    server = pulled(start_standin(gpu="on"))
    sshd.start(keys.host_a)

    code = smoke_test.main([
        "--tunnel", "--remote-port", str(server.port), "--host", "127.0.0.1", "--port", str(sshd.port),
        "--identity", str(keys.client), "--known-hosts", str(tmp_path / "known_hosts"),
        "--model", "qwen3:8b", "--timeout", "20", "--retry-initial", "0.1",
    ])
    out = capsys.readouterr().out

    assert code == cli.EXIT_OK
    assert "at http://127.0.0.1:" in out
    assert f":{server.port}" not in out.split("at http://127.0.0.1:")[1].split()[0]


def test_missing_api_key_without_model(start_standin, capsys):
    """Without --model, a 401 left the model name empty, and the chat checks died with a pydantic ValidationError."""
    server = pulled(start_standin(gpu="on", api_key="sk-test-0123456789"), api_key="sk-test-0123456789")

    code = smoke_test.main(["--url", server.url])
    out = capsys.readouterr().out

    assert code == cli.EXIT_FAILED
    assert "401: the endpoint needs an API key; set OLLAMA_API_KEY or pass --api-key-env" in out
    assert out.count("SKIP") == 5
    assert "skipped: the endpoint rejected the request (401)" in out


def test_wrong_api_key_named(start_standin, capsys, monkeypatch):
    server = pulled(start_standin(gpu="on", api_key="sk-test-0123456789"), api_key="sk-test-0123456789")
    monkeypatch.setenv("MY_OLLAMA_KEY", "sk-wrong")

    code = smoke_test.main(["--url", server.url, "--api-key-env", "MY_OLLAMA_KEY"])
    out = capsys.readouterr().out

    assert code == cli.EXIT_FAILED
    assert "401: the endpoint rejected the API key; check the key in MY_OLLAMA_KEY" in out
    assert "sk-wrong" not in out


def test_no_models_installed(start_standin, capsys):
    """Without --model, a server with no models left the model name empty, and chatting crashed."""
    server = start_standin(gpu="on")

    code = smoke_test.main(["--url", server.url])
    out = capsys.readouterr().out

    assert code == cli.EXIT_FAILED
    assert "no models installed" in out
    assert out.count("skipped: no model to chat with") == 4
