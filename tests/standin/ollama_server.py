#!/usr/bin/env python3
"""Stand-in for the Ollama server, for tests that cannot run a real model.

It speaks the parts of Ollama's HTTP API that this project uses, stores models
the way Ollama does (manifests and blobs under OLLAMA_MODELS), and replies with
fixed, configurable timings. It needs only the Python 3.11 standard library,
so it runs as `ollama` inside a bare Debian bookworm container.

Command line (the same shape as the real binary where they overlap):
    ollama serve                      start the API server
    ollama -v | --version             print "ollama version is X"
    ollama list | ps                  query a running server
    ollama registry                   start a plain-HTTP model registry (stand-in
                                      only) that `pull` reads when a model name
                                      starts with its host:port

Environment read by `serve`, as real Ollama reads it:
    OLLAMA_HOST        bind address, default 127.0.0.1:11434
    OLLAMA_MODELS      model store, default ~/.ollama/models
    OLLAMA_KEEP_ALIVE  how long a model stays loaded after a request, default 5m
                       (Go duration such as 30s, 5m, 1h; a negative value keeps it
                       loaded forever; 0 unloads after each request)

Knobs of the stand-in, read once at startup. A value marked "per model" is either
one number for every model or a list such as "qwen3:8b=40,tiny:1b=120,*=60":
    OLLAMA_STANDIN_VERSION           reported version, default 0.32.15
    OLLAMA_STANDIN_MODEL_SIZE        bytes of the built-in model's weights layer,
                                     per model, default 8388608 (8 MiB)
    OLLAMA_STANDIN_PULL_SPEED        download speed in bytes/s, 0 = unlimited,
                                     default 0
    OLLAMA_STANDIN_PULL_SECONDS      target duration of one full pull in seconds;
                                     when set it overrides PULL_SPEED
    OLLAMA_STANDIN_PULL_STALL_SECONDS  stop sending progress for this many seconds
                                     in the middle of a pull; "forever" or -1 stalls
                                     until the client disconnects; default 0 (off)
    OLLAMA_STANDIN_PULL_STALL_AT     fraction of the weights layer at which the
                                     stall starts, default 0.5
    OLLAMA_STANDIN_PULL_STALL_ATTEMPTS  stall only the first K pull attempts
                                     (counted across restarts), 0 = every attempt
    OLLAMA_STANDIN_PULL_FAIL         error text; when set, a pull fails with it
    OLLAMA_STANDIN_PULL_FAIL_AT      fraction of the weights layer at which the
                                     pull fails, default 0 (at the manifest)
    OLLAMA_STANDIN_PULL_FAIL_ATTEMPTS  fail only the first K attempts, 0 = every one
    OLLAMA_STANDIN_LOAD_SECONDS      time to load a model into memory, per model,
                                     default 0.2; slept and reported as
                                     load_duration
    OLLAMA_STANDIN_EVAL_COUNT        tokens generated per answer, default 24
                                     (capped by options.num_predict)
    OLLAMA_STANDIN_EVAL_RATE         decode speed in tokens/s, per model, default 40
    OLLAMA_STANDIN_PROMPT_EVAL_RATE  prompt speed in tokens/s, per model,
                                     default 400
    OLLAMA_STANDIN_TOKEN_DELAY       seconds slept between streamed tokens,
                                     default 0 (timings are reported, not slept)
    OLLAMA_STANDIN_GPU               auto | on | off | partial, default auto.
                                     auto: a model loads into VRAM only when
                                     `nvidia-smi` exits 0 at load time, as real
                                     Ollama needs the driver; otherwise it runs on
                                     the CPU (size_vram 0). partial puts half in VRAM.
    OLLAMA_STANDIN_API_KEY           when set, every request except GET / and HEAD /
                                     needs "Authorization: Bearer <key>" (401
                                     otherwise), like an authenticating proxy

Knobs of `ollama registry`:
    OLLAMA_STANDIN_REGISTRY_HOST     bind address, default 127.0.0.1:5000
    OLLAMA_STANDIN_REGISTRY_MODELS   names it serves ("library/tiny:1b ..."),
                                     empty = any name
    OLLAMA_STANDIN_MODEL_SIZE        as above, for the layers it serves
    OLLAMA_STANDIN_REGISTRY_SPEED    bytes/s it sends, 0 = unlimited

The registry uses the OCI distribution paths that Ollama's registry uses:
GET /v2/<namespace>/<model>/manifests/<tag> and /v2/<namespace>/<model>/blobs/<digest>
(blobs honour "Range: bytes=N-", so an interrupted pull resumes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import ipaddress
import json
import logging
import math
import os
import re
import select
import socket
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger("ollama-standin")

# Ollama encodes with Go's encoding/json, which puts no spaces after ':' or ','.
# Clients that match text in the stream (the bootstrap's shell does) rely on that.
WIRE_SEPARATORS = (",", ":")

DEFAULT_VERSION = "0.32.15"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_PORT = 11434
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
CHUNK_BYTES = 256 * 1024
# A warm model still reports a few milliseconds of load_duration in real Ollama.
WARM_LOAD_NS = 12_000_000
FOREVER = float("inf")
ANSWER_WORDS = (
    "The stand-in Ollama server produced this answer so tests can check the "
    "shape of a reply without running a model on a GPU."
).split()


# --- configuration -------------------------------------------------------


def parse_per_model(text: str | None, default: float) -> Callable[[str], float]:
    """Parse "N" or "name=N,other=M,*=K" into a function of the model name."""
    table: dict[str, float] = {}
    fallback = default
    for item in (text or "").replace(" ", ",").split(","):
        if not item:
            continue
        if "=" not in item:
            fallback = float(item)
            continue
        name, _, value = item.rpartition("=")
        if name == "*":
            fallback = float(value)
        else:
            table[name] = float(value)

    def lookup(model: str) -> float:
        if model in table:
            return table[model]
        short = display_name(parse_model_name(model))
        return table.get(short, fallback)

    return lookup


def parse_duration(value: Any, default: float) -> float:
    """Parse a keep-alive value (Go duration string or seconds) into seconds.

    Negative values mean "forever", as in Ollama.
    """
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
            parts = re.findall(r"(-?[\d.]+)(ns|us|µs|ms|s|m|h)", text)
            if not parts or "".join(n + u for n, u in parts) != text.lstrip("+"):
                raise ValueError(f"invalid duration {text!r}")
            seconds = sum(float(n) * units[u] for n, u in parts)
    return FOREVER if seconds < 0 else seconds


def parse_stall(text: str | None) -> float:
    if not text:
        return 0.0
    if text.strip().lower() in ("forever", "inf", "-1"):
        return FOREVER
    return float(text)


@dataclass
class Config:
    """Settings of one stand-in server, read from the environment at startup."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    models_dir: Path = field(default_factory=lambda: Path.home() / ".ollama" / "models")
    keep_alive: float = 300.0
    version: str = DEFAULT_VERSION
    model_size: Callable[[str], float] = field(default_factory=lambda: parse_per_model(None, 8 * 1024 * 1024))
    pull_speed: float = 0.0
    pull_seconds: float = 0.0
    stall_seconds: float = 0.0
    stall_at: float = 0.5
    stall_attempts: int = 0
    fail_message: str = ""
    fail_at: float = 0.0
    fail_attempts: int = 0
    load_seconds: Callable[[str], float] = field(default_factory=lambda: parse_per_model(None, 0.2))
    eval_count: int = 24
    eval_rate: Callable[[str], float] = field(default_factory=lambda: parse_per_model(None, 40.0))
    prompt_eval_rate: Callable[[str], float] = field(default_factory=lambda: parse_per_model(None, 400.0))
    token_delay: float = 0.0
    gpu: str = "auto"
    api_key: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Config":
        env = dict(os.environ if env is None else env)
        host, port = parse_bind(env.get("OLLAMA_HOST", ""), DEFAULT_PORT)
        models = env.get("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models")
        gpu = env.get("OLLAMA_STANDIN_GPU", "auto").lower()
        if gpu not in ("auto", "on", "off", "partial"):
            raise ValueError(f"OLLAMA_STANDIN_GPU={gpu!r} is invalid: use auto, on, off or partial")
        return cls(
            host=host,
            port=port,
            models_dir=Path(models),
            keep_alive=parse_duration(env.get("OLLAMA_KEEP_ALIVE"), 300.0),
            version=env.get("OLLAMA_STANDIN_VERSION", DEFAULT_VERSION),
            model_size=parse_per_model(env.get("OLLAMA_STANDIN_MODEL_SIZE"), 8 * 1024 * 1024),
            pull_speed=float(env.get("OLLAMA_STANDIN_PULL_SPEED") or 0),
            pull_seconds=float(env.get("OLLAMA_STANDIN_PULL_SECONDS") or 0),
            stall_seconds=parse_stall(env.get("OLLAMA_STANDIN_PULL_STALL_SECONDS")),
            stall_at=float(env.get("OLLAMA_STANDIN_PULL_STALL_AT") or 0.5),
            stall_attempts=int(env.get("OLLAMA_STANDIN_PULL_STALL_ATTEMPTS") or 0),
            fail_message=env.get("OLLAMA_STANDIN_PULL_FAIL", ""),
            fail_at=float(env.get("OLLAMA_STANDIN_PULL_FAIL_AT") or 0),
            fail_attempts=int(env.get("OLLAMA_STANDIN_PULL_FAIL_ATTEMPTS") or 0),
            load_seconds=parse_per_model(env.get("OLLAMA_STANDIN_LOAD_SECONDS"), 0.2),
            eval_count=int(env.get("OLLAMA_STANDIN_EVAL_COUNT") or 24),
            eval_rate=parse_per_model(env.get("OLLAMA_STANDIN_EVAL_RATE"), 40.0),
            prompt_eval_rate=parse_per_model(env.get("OLLAMA_STANDIN_PROMPT_EVAL_RATE"), 400.0),
            token_delay=float(env.get("OLLAMA_STANDIN_TOKEN_DELAY") or 0),
            gpu=gpu,
            api_key=env.get("OLLAMA_STANDIN_API_KEY", ""),
        )


def parse_bind(text: str, default_port: int) -> tuple[str, int]:
    """Parse an OLLAMA_HOST value ("host", "host:port", ":port", "http://host:port")."""
    text = (text or "").strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if not text:
        return "127.0.0.1", default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default_port
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    return host or "127.0.0.1", int(port)


# --- model names and the on-disk store ----------------------------------


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str


def parse_model_name(name: str) -> ModelName:
    """Split "[host/][namespace/]model[:tag]" with Ollama's defaults."""
    if not name or not name.strip():
        raise ValueError("model is required")
    parts = name.strip().split("/")
    last = parts[-1]
    model, _, tag = last.partition(":")
    tag = tag or "latest"
    if len(parts) >= 3:
        host, namespace = parts[0], "/".join(parts[1:-1])
    elif len(parts) == 2:
        host, namespace = DEFAULT_REGISTRY, parts[0]
    else:
        host, namespace = DEFAULT_REGISTRY, DEFAULT_NAMESPACE
    if not model or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model):
        raise ValueError(f"invalid model name {name!r}")
    return ModelName(host=host, namespace=namespace, model=model, tag=tag)


def display_name(name: ModelName) -> str:
    """Return the name as `ollama list` shows it (defaults left out)."""
    if name.host == DEFAULT_REGISTRY and name.namespace == DEFAULT_NAMESPACE:
        return f"{name.model}:{name.tag}"
    if name.host == DEFAULT_REGISTRY:
        return f"{name.namespace}/{name.model}:{name.tag}"
    return f"{name.host}/{name.namespace}/{name.model}:{name.tag}"


def fake_weights(seed: str, size: int) -> Iterator[bytes]:
    """Yield `size` deterministic bytes that start like a GGUF file."""
    block = (b"GGUF" + hashlib.sha256(seed.encode()).digest() * 2048)[:65536]
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        sent += len(piece)
        yield piece


def fake_config(name: ModelName, size: int) -> bytes:
    """Build the config blob that describes a fake model (family, size, quantization)."""
    match = re.search(r"(\d+(?:\.\d+)?)b", name.tag.lower())
    params = f"{float(match.group(1)):.1f}B" if match else "1.0B"
    config = {
        "model_format": "gguf",
        "model_family": name.model.split("-")[0].rstrip("0123456789.") or "llama",
        "model_families": [name.model.split("-")[0].rstrip("0123456789.") or "llama"],
        "model_type": params,
        "file_type": "Q4_K_M",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "standin_weights_bytes": size,
    }
    return json.dumps(config, sort_keys=True).encode()


_DIGEST_CACHE: dict[tuple[str, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def fake_weights_digest(seed: str, size: int) -> str:
    with _DIGEST_LOCK:
        key = (seed, size)
        if key not in _DIGEST_CACHE:
            digest = hashlib.sha256()
            for piece in fake_weights(seed, size):
                digest.update(piece)
            _DIGEST_CACHE[key] = "sha256:" + digest.hexdigest()
        return _DIGEST_CACHE[key]


def fake_manifest(name: ModelName, size: int) -> tuple[dict, dict[str, Callable[[], Iterator[bytes]]]]:
    """Build a manifest for a fake model and the readers of its blobs."""
    seed = f"{name.namespace}/{name.model}:{name.tag}"
    config = fake_config(name, size)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    weights_digest = fake_weights_digest(seed, size)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": MODEL_MEDIA_TYPE, "digest": weights_digest, "size": size}],
    }
    readers = {
        config_digest: lambda: iter([config]),
        weights_digest: lambda: fake_weights(seed, size),
    }
    return manifest, readers


class ModelStore:
    """Models on disk in Ollama's layout: manifests/<host>/<ns>/<model>/<tag>, blobs/sha256-<hex>."""

    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs"
        self.manifests = root / "manifests"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.manifests.mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.replace(":", "-")

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests / name.host / name.namespace / name.model / name.tag

    def read_manifest(self, name: ModelName) -> dict | None:
        path = self.manifest_path(name)
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def write_manifest(self, name: ModelName, manifest: dict) -> None:
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, path)

    def delete_manifest(self, name: ModelName) -> bool:
        path = self.manifest_path(name)
        if not path.is_file():
            return False
        path.unlink()
        return True

    def entries(self) -> Iterator[tuple[ModelName, dict, float]]:
        for path in sorted(self.manifests.glob("*/*/*/*")):
            if not path.is_file() or path.name.endswith(".tmp"):
                continue
            rel = path.relative_to(self.manifests).parts
            name = ModelName(host=rel[0], namespace=rel[1], model=rel[2], tag=rel[3])
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                log.warning("skipping unreadable manifest %s", path)
                continue
            yield name, manifest, path.stat().st_mtime

    def model_info(self, name: ModelName, manifest: dict, mtime: float) -> dict:
        size = sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"]
        config: dict = {}
        config_path = self.blob_path(manifest["config"]["digest"])
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text())
            except (OSError, json.JSONDecodeError):
                config = {}
        manifest_digest = hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
        shown = display_name(name)
        return {
            "name": shown,
            "model": shown,
            "modified_at": iso_time(mtime),
            "size": size,
            "digest": manifest_digest,
            "details": {
                "parent_model": "",
                "format": config.get("model_format", "gguf"),
                "family": config.get("model_family", "llama"),
                "families": config.get("model_families", ["llama"]),
                "parameter_size": config.get("model_type", ""),
                "quantization_level": config.get("file_type", ""),
            },
        }


def iso_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat().replace("+00:00", "Z")


# --- pulling -------------------------------------------------------------


class PullError(Exception):
    """A pull failed. The message is what Ollama sends as {"error": ...}."""


class ClientGone(Exception):
    """The HTTP client closed the connection during a streamed reply."""


def _http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0):
    request = urllib.request.Request(url, headers=headers or {})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - URL built from the pull request


class Puller:
    """Downloads one model into the store, reporting progress like Ollama does."""

    def __init__(self, server: "StandinState", name: ModelName, insecure: bool,
                 emit: Callable[[dict], None], client_closed: Callable[[], bool]):
        self.state = server
        self.config = server.config
        self.store = server.store
        self.name = name
        self.insecure = insecure
        self.emit = emit
        self.client_closed = client_closed

    def run(self) -> None:
        attempt = self.state.next_pull_attempt()
        self.emit({"status": "pulling manifest"})
        self._maybe_fail(attempt, at_manifest=True)
        manifest, readers = self._fetch_manifest()
        layers = list(manifest["layers"]) + [manifest["config"]]
        total_bytes = sum(layer["size"] for layer in layers)
        started = time.monotonic()
        done_before = 0
        for layer in layers:
            self._download(layer, readers, attempt, total_bytes, started, done_before)
            done_before += layer["size"]
        self.emit({"status": "verifying sha256 digest"})
        for layer in layers:
            self._verify(layer)
        self.emit({"status": "writing manifest"})
        self.store.write_manifest(self.name, manifest)
        self.emit({"status": "success"})

    def _maybe_fail(self, attempt: int, at_manifest: bool) -> None:
        if not self.config.fail_message:
            return
        if self.config.fail_attempts and attempt > self.config.fail_attempts:
            return
        if at_manifest == (self.config.fail_at <= 0):
            raise PullError(self.config.fail_message)

    def _base_url(self) -> str:
        scheme = "http" if self.insecure else "https"
        return f"{scheme}://{self.name.host}/v2/{self.name.namespace}/{self.name.model}"

    def _fetch_manifest(self) -> tuple[dict, dict[str, Callable[[], Iterator[bytes]]]]:
        if self.name.host == DEFAULT_REGISTRY:
            size = int(self.config.model_size(display_name(self.name)))
            return fake_manifest(self.name, size)
        url = f"{self._base_url()}/manifests/{self.name.tag}"
        try:
            with _http_get(url, {"Accept": MANIFEST_MEDIA_TYPE}) as response:
                manifest = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise PullError("pull model manifest: file does not exist") from None
            raise PullError(f"pull model manifest: GET {url}: {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PullError(f'pull model manifest: Get "{url}": {reason}') from None
        return manifest, {}

    def _open_blob(self, digest: str, readers: dict, offset: int) -> Iterator[bytes]:
        if digest in readers:
            skipped = 0
            for piece in readers[digest]():
                if skipped + len(piece) <= offset:
                    skipped += len(piece)
                    continue
                start = max(0, offset - skipped)
                skipped += len(piece)
                yield piece[start:]
            return
        url = f"{self._base_url()}/blobs/{digest}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with _http_get(url, headers) as response:
                if offset and response.status != 206:
                    raise PullError(f"download {digest}: registry ignored the Range request")
                while True:
                    piece = response.read(CHUNK_BYTES)
                    if not piece:
                        return
                    yield piece
        except urllib.error.HTTPError as exc:
            raise PullError(f"download {digest}: {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise PullError(f"download {digest}: {getattr(exc, 'reason', exc)}") from None

    def _bytes_per_second(self, total_bytes: int) -> float:
        if self.config.pull_seconds > 0:
            return total_bytes / self.config.pull_seconds
        return self.config.pull_speed

    def _download(self, layer: dict, readers: dict, attempt: int, total_bytes: int,
                  started: float, done_before: int) -> None:
        digest, size = layer["digest"], layer["size"]
        status = f"pulling {digest.split(':', 1)[1][:12]}"
        final = self.store.blob_path(digest)
        if final.is_file() and final.stat().st_size == size:
            self.emit({"status": status, "digest": digest, "total": size, "completed": size})
            return
        partial = final.with_name(final.name + "-partial")
        completed = partial.stat().st_size if partial.is_file() else 0
        if completed > size:
            partial.unlink()
            completed = 0
        is_weights = layer.get("mediaType") == MODEL_MEDIA_TYPE
        stall_pending = is_weights and self._stall_applies(attempt)
        fail_pending = is_weights and self._fail_mid_pull_applies(attempt)
        speed = self._bytes_per_second(total_bytes)
        self.emit({"status": status, "digest": digest, "total": size, "completed": completed})
        last_emit = time.monotonic()
        with open(partial, "ab") as out:
            for piece in self._open_blob(digest, readers, completed):
                for start in range(0, len(piece), CHUNK_BYTES // 4):
                    part = piece[start:start + CHUNK_BYTES // 4]
                    out.write(part)
                    completed += len(part)
                    if speed > 0:
                        out.flush()
                        due = started + (done_before + completed) / speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    if stall_pending and completed >= size * self.config.stall_at:
                        stall_pending = False
                        out.flush()
                        # Shift the pacing clock, so the download resumes at the same speed.
                        started += self._stall()
                    if fail_pending and completed >= size * self.config.fail_at:
                        out.flush()
                        raise PullError(self.config.fail_message)
                    now = time.monotonic()
                    if now - last_emit >= 0.1 or completed == size:
                        self.emit({"status": status, "digest": digest, "total": size, "completed": completed})
                        last_emit = now
        if completed != size:
            raise PullError(f"download {digest}: got {completed} of {size} bytes")
        self.emit({"status": status, "digest": digest, "total": size, "completed": completed})

    def _stall_applies(self, attempt: int) -> bool:
        if self.config.stall_seconds <= 0:
            return False
        return not self.config.stall_attempts or attempt <= self.config.stall_attempts

    def _fail_mid_pull_applies(self, attempt: int) -> bool:
        if not self.config.fail_message or self.config.fail_at <= 0:
            return False
        return not self.config.fail_attempts or attempt <= self.config.fail_attempts

    def _stall(self) -> float:
        """Send nothing for the configured time, or until the client disconnects; return seconds stalled."""
        log.info("pull of %s stalls for %s s (test knob)", display_name(self.name), self.config.stall_seconds)
        began = time.monotonic()
        deadline = began + self.config.stall_seconds
        while time.monotonic() < deadline:
            if self.client_closed():
                raise ClientGone()
            time.sleep(0.05)
        return time.monotonic() - began

    def _verify(self, layer: dict) -> None:
        final = self.store.blob_path(layer["digest"])
        partial = final.with_name(final.name + "-partial")
        if final.is_file():
            return
        digest = hashlib.sha256()
        with open(partial, "rb") as handle:
            for piece in iter(lambda: handle.read(1 << 20), b""):
                digest.update(piece)
        if "sha256:" + digest.hexdigest() != layer["digest"]:
            partial.unlink()
            raise PullError(f"digest mismatch, file must be downloaded again: want {layer['digest']}, "
                            f"got sha256:{digest.hexdigest()}")
        os.replace(partial, final)


# --- loaded models and replies -------------------------------------------


@dataclass
class LoadedModel:
    name: str
    size: int
    size_vram: int
    digest: str
    details: dict
    expires_at: float


def nvidia_smi_works() -> bool:
    """Return True when `nvidia-smi` runs and exits 0, the way Ollama finds a usable driver."""
    path = shutil.which("nvidia-smi")
    if not path:
        return False
    try:
        return subprocess.run([path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class StandinState:
    """State shared by the request handlers of one server."""

    def __init__(self, config: Config):
        self.config = config
        self.store = ModelStore(config.models_dir)
        self.lock = threading.Lock()
        self.loaded: dict[str, LoadedModel] = {}
        self.load_locks: dict[str, threading.Lock] = {}
        self.attempts_file = config.models_dir / ".standin-pull-attempts"

    def next_pull_attempt(self) -> int:
        """Count pull attempts in a file, so "first K attempts" knobs survive a restart."""
        with self.lock:
            try:
                count = int(self.attempts_file.read_text().strip() or 0)
            except (OSError, ValueError):
                count = 0
            count += 1
            self.attempts_file.write_text(str(count))
            return count

    def find(self, model: str) -> tuple[ModelName, dict, float] | None:
        name = parse_model_name(model)
        manifest = self.store.read_manifest(name)
        if manifest is None:
            return None
        return name, manifest, self.store.manifest_path(name).stat().st_mtime

    def expire(self) -> None:
        now = time.time()
        with self.lock:
            for key in [k for k, m in self.loaded.items() if m.expires_at <= now]:
                log.info("unloading %s (keep-alive expired)", key)
                del self.loaded[key]

    def ensure_loaded(self, model: str, keep_alive: Any) -> tuple[LoadedModel, int]:
        """Load a model if needed and return it with the load duration in ns."""
        found = self.find(model)
        if found is None:
            raise LookupError(model)
        name, manifest, mtime = found
        info = self.store.model_info(name, manifest, mtime)
        key = info["name"]
        seconds_alive = parse_duration(keep_alive, self.config.keep_alive)
        self.expire()
        with self.lock:
            load_lock = self.load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self.lock:
                current = self.loaded.get(key)
            if current is not None:
                load_ns = WARM_LOAD_NS
            else:
                load_seconds = self.config.load_seconds(key)
                log.info("loading %s (%.2f s)", key, load_seconds)
                time.sleep(load_seconds)
                load_ns = int(load_seconds * 1e9)
                current = LoadedModel(name=key, size=info["size"], size_vram=self._vram_for(info["size"]),
                                      digest=info["digest"], details=info["details"], expires_at=0)
            current.expires_at = time.time() + min(seconds_alive, 1e10)
            with self.lock:
                self.loaded[key] = current
        return current, load_ns

    def release(self, loaded: LoadedModel) -> None:
        """Drop a model whose keep-alive is 0 once its request has finished."""
        if loaded.expires_at <= time.time():
            with self.lock:
                if self.loaded.get(loaded.name) is loaded:
                    log.info("unloading %s (keep_alive 0)", loaded.name)
                    del self.loaded[loaded.name]

    def _vram_for(self, size: int) -> int:
        mode = self.config.gpu
        if mode == "auto":
            mode = "on" if nvidia_smi_works() else "off"
            if mode == "off":
                log.warning("no NVIDIA GPU found (nvidia-smi failed): model runs on the CPU")
        if mode == "on":
            return size
        if mode == "partial":
            return size // 2
        return 0

    def unload(self, model: str) -> None:
        name = display_name(parse_model_name(model))
        with self.lock:
            self.loaded.pop(name, None)


@dataclass
class Timings:
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int

    @property
    def total_duration(self) -> int:
        # A small fixed overhead, as a real server spends time outside the three phases.
        return self.load_duration + self.prompt_eval_duration + self.eval_duration + 3_000_000

    def as_dict(self) -> dict:
        return {
            "total_duration": self.total_duration,
            "load_duration": self.load_duration,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration": self.prompt_eval_duration,
            "eval_count": self.eval_count,
            "eval_duration": self.eval_duration,
        }


def count_prompt_tokens(text: str) -> int:
    # About four bytes per token, as for English text with common tokenizers.
    return max(1, math.ceil(len(text.encode()) / 4))


def answer_tokens(count: int) -> list[str]:
    words = [ANSWER_WORDS[i % len(ANSWER_WORDS)] for i in range(count)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def make_timings(config: Config, model: str, prompt_text: str, load_ns: int, options: dict | None) -> Timings:
    eval_count = config.eval_count
    num_predict = (options or {}).get("num_predict")
    if isinstance(num_predict, int) and num_predict > 0:
        eval_count = min(eval_count, num_predict)
    prompt_count = count_prompt_tokens(prompt_text)
    return Timings(
        load_duration=load_ns,
        prompt_eval_count=prompt_count,
        prompt_eval_duration=int(prompt_count / config.prompt_eval_rate(model) * 1e9),
        eval_count=eval_count,
        eval_duration=int(eval_count / config.eval_rate(model) * 1e9),
    )


# --- HTTP ----------------------------------------------------------------


def now_iso() -> str:
    return iso_time(time.time())


class Handler(BaseHTTPRequestHandler):
    """Routes Ollama API requests to the shared StandinState."""

    protocol_version = "HTTP/1.1"
    server_version = "ollama-standin"
    state: StandinState  # set on the subclass made by make_server

    # -- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - name fixed by the base class
        log.debug("%s %s", self.address_string(), format % args)

    def _read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        body = self.rfile.read(length)
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object")
        return data

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, separators=WIRE_SEPARATORS).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ClientGone() from exc

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _ndjson(self, payload: dict) -> None:
        self._chunk(json.dumps(payload, separators=WIRE_SEPARATORS).encode() + b"\n")

    def _client_closed(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, 0x2) == b""  # MSG_PEEK
        except OSError:
            return True

    def _authorized(self) -> bool:
        key = self.state.config.api_key
        if not key or (self.path == "/" and self.command in ("GET", "HEAD")):
            return True
        if self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self._send_json(401, {"error": "unauthorized"})
        return False

    def _host_allowed(self) -> bool:
        """Apply Ollama's DNS-rebinding guard: on a loopback address, reject public Host names.

        Real Ollama (server/routes.go, allowedHostsMiddleware) returns 403 when it listens
        on loopback and the Host header names neither a loopback, private or unspecified
        address, nor localhost, this machine's hostname or a .localhost/.local/.internal name.
        """
        if not ipaddress.ip_address(self.server.server_address[0]).is_loopback:
            return True
        host = self.headers.get("Host", "")
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
        host = host.strip("[]").lower()
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in ("", "localhost", socket.gethostname().lower()) or host.endswith(
                (".localhost", ".local", ".internal"))
        return address.is_loopback or address.is_private or address.is_unspecified

    def _dispatch(self, routes: dict[str, Callable[[], None]]) -> None:
        path = self.path.split("?", 1)[0]
        if self.command in ("GET", "HEAD"):
            # Discard a body these handlers ignore, as Go's net/http does; left unread, it
            # would be parsed as the start of the next request on a kept-alive connection.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._host_allowed():
            self._send_text(403, "")
            return
        route = routes.get(path)
        if route is None:
            self._send_text(404, "404 page not found")
            return
        if not self._authorized():
            return
        try:
            route()
        except BadRequest as exc:
            self._send_json(400, {"error": str(exc)})
        except ClientGone:
            log.info("client closed the connection during %s %s", self.command, path)
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - name fixed by the base class
        self._dispatch({
            "/": lambda: self._send_text(200, "Ollama is running"),
            "/api/version": lambda: self._send_json(200, {"version": self.state.config.version}),
            "/api/tags": self.handle_tags,
            "/api/ps": self.handle_ps,
            "/v1/models": self.handle_openai_models,
        })

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch({"/": lambda: self._send_text(200, "Ollama is running"),
                        "/api/version": lambda: self._send_json(200, {"version": self.state.config.version})})

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch({
            "/api/pull": self.handle_pull,
            "/api/copy": self.handle_copy,
            "/api/show": self.handle_show,
            "/api/generate": self.handle_generate,
            "/api/chat": self.handle_chat,
            "/v1/chat/completions": self.handle_openai_chat,
        })

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch({"/api/delete": self.handle_delete})

    # -- model listing

    def handle_tags(self) -> None:
        models = [self.state.store.model_info(name, manifest, mtime)
                  for name, manifest, mtime in self.state.store.entries()]
        models.sort(key=lambda m: m["modified_at"], reverse=True)
        self._send_json(200, {"models": models})

    def handle_ps(self) -> None:
        self.state.expire()
        with self.state.lock:
            loaded = list(self.state.loaded.values())
        models = [{
            "name": m.name,
            "model": m.name,
            "size": m.size,
            "digest": m.digest,
            "details": m.details,
            "expires_at": iso_time(min(m.expires_at, 9e9)) if m.expires_at != FOREVER else "2318-01-01T00:00:00Z",
            "size_vram": m.size_vram,
            "context_length": 4096,
        } for m in loaded]
        self._send_json(200, {"models": models})

    def handle_openai_models(self) -> None:
        data = [{"id": info["name"], "object": "model", "created": int(mtime), "owned_by": name.namespace}
                for name, manifest, mtime in self.state.store.entries()
                for info in [self.state.store.model_info(name, manifest, mtime)]]
        self._send_json(200, {"object": "list", "data": data})

    def handle_show(self) -> None:
        request = self._read_json()
        model = request.get("model") or request.get("name") or ""
        found = self._find_or_404(model)
        if found is None:
            return
        name, manifest, mtime = found
        info = self.state.store.model_info(name, manifest, mtime)
        self._send_json(200, {
            "license": "",
            "modelfile": f"FROM {display_name(name)}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": info["details"],
            "model_info": {"general.architecture": info["details"]["family"],
                           "general.parameter_count": 0},
            "capabilities": ["completion"],
            "modified_at": info["modified_at"],
        })

    def _find_or_404(self, model: str) -> tuple[ModelName, dict, float] | None:
        try:
            found = self.state.find(model)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if found is None:
            self._send_json(404, {"error": f"model '{model}' not found"})
        return found

    # -- pull, copy, delete

    def handle_pull(self) -> None:
        request = self._read_json()
        model = request.get("model") or request.get("name") or ""
        try:
            name = parse_model_name(model)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        stream = request.get("stream", True) is not False
        insecure = bool(request.get("insecure"))
        log.info("pull %s (insecure=%s, stream=%s)", display_name(name), insecure, stream)
        if stream:
            self._start_stream("application/x-ndjson")
            puller = Puller(self.state, name, insecure, self._ndjson, self._client_closed)
            try:
                puller.run()
            except PullError as exc:
                log.warning("pull of %s failed: %s", display_name(name), exc)
                self._ndjson({"error": str(exc)})
            self._end_stream()
            return
        puller = Puller(self.state, name, insecure, lambda _line: None, lambda: False)
        try:
            puller.run()
        except PullError as exc:
            log.warning("pull of %s failed: %s", display_name(name), exc)
            self._send_json(500, {"error": str(exc)})
            return
        self._send_json(200, {"status": "success"})

    def handle_copy(self) -> None:
        request = self._read_json()
        source, destination = request.get("source", ""), request.get("destination", "")
        if not source or not destination:
            raise BadRequest("source and destination are required")
        found = self._find_or_404(source)
        if found is None:
            return
        try:
            target = parse_model_name(destination)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        self.state.store.write_manifest(target, found[1])
        log.info("copied %s to %s", source, display_name(target))
        self._send_json(200, {})

    def handle_delete(self) -> None:
        request = self._read_json()
        model = request.get("model") or request.get("name") or ""
        try:
            deleted = self.state.store.delete_manifest(parse_model_name(model))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if not deleted:
            self._send_json(404, {"error": f"model '{model}' not found"})
            return
        self.state.unload(model)
        self._send_json(200, {})

    # -- generation

    def _load_or_404(self, model: str, keep_alive: Any, openai: bool = False) -> tuple[LoadedModel, int] | None:
        message = f'model "{model}" not found, try pulling it first'
        try:
            return self.state.ensure_loaded(model, keep_alive)
        except LookupError:
            if openai:
                self._send_json(404, {"error": {"message": message, "type": "api_error", "param": None,
                                                "code": None}})
            else:
                self._send_json(404, {"error": message})
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return None

    def _emit_tokens(self, tokens: list[str], make_chunk: Callable[[str], dict]) -> None:
        for token in tokens:
            if self.state.config.token_delay:
                time.sleep(self.state.config.token_delay)
            self._ndjson(make_chunk(token))

    def handle_generate(self) -> None:
        request = self._read_json()
        model = request.get("model") or ""
        if not model:
            raise BadRequest("model is required")

        prompt = request.get("prompt") or ""
        stream = request.get("stream", True) is not False
        loaded = self._load_or_404(model, request.get("keep_alive"))
        if loaded is None:
            return
        current, load_ns = loaded
        base = {"model": current.name}

        if not prompt:
            # Ollama only loads (or, with keep_alive 0, unloads) the model for an empty prompt.
            reason = "unload" if parse_duration(request.get("keep_alive"), self.state.config.keep_alive) == 0 else "load"
            self.state.release(current)
            self._send_json(200, {**base, "created_at": now_iso(), "response": "", "done": True,
                                  "done_reason": reason})
            return

        timings = make_timings(self.state.config, current.name, (request.get("system") or "") + prompt,
                               load_ns, request.get("options"))
        tokens = answer_tokens(timings.eval_count)
        final = {**base, "created_at": now_iso(), "response": "", "done": True, "done_reason": "stop",
                 "context": [1, 2, 3], **timings.as_dict()}

        try:
            if stream:
                self._start_stream("application/x-ndjson")
                self._emit_tokens(tokens, lambda t: {**base, "created_at": now_iso(), "response": t, "done": False})
                self._ndjson(final)
                self._end_stream()
            else:
                self._send_json(200, {**final, "response": "".join(tokens)})
        finally:
            self.state.release(current)

    def handle_chat(self) -> None:
        request = self._read_json()
        model = request.get("model") or ""
        if not model:
            raise BadRequest("model is required")

        messages = request.get("messages") or []
        stream = request.get("stream", True) is not False
        loaded = self._load_or_404(model, request.get("keep_alive"))
        if loaded is None:
            return
        current, load_ns = loaded
        base = {"model": current.name}

        if not messages:
            self.state.release(current)
            self._send_json(200, {**base, "created_at": now_iso(), "message": {"role": "assistant", "content": ""},
                                  "done": True, "done_reason": "load"})
            return

        prompt_text = "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        timings = make_timings(self.state.config, current.name, prompt_text, load_ns, request.get("options"))
        tokens = answer_tokens(timings.eval_count)
        final = {**base, "created_at": now_iso(), "message": {"role": "assistant", "content": ""},
                 "done": True, "done_reason": "stop", **timings.as_dict()}

        try:
            if stream:
                self._start_stream("application/x-ndjson")
                self._emit_tokens(tokens, lambda t: {**base, "created_at": now_iso(),
                                                     "message": {"role": "assistant", "content": t}, "done": False})
                self._ndjson(final)
                self._end_stream()
            else:
                final["message"]["content"] = "".join(tokens)
                self._send_json(200, final)
        finally:
            self.state.release(current)

    def handle_openai_chat(self) -> None:
        request = self._read_json()
        model = request.get("model") or ""
        if not model:
            self._send_json(400, {"error": {"message": "model is required", "type": "invalid_request_error",
                                            "param": None, "code": None}})
            return

        messages = request.get("messages") or []
        loaded = self._load_or_404(model, None, openai=True)
        if loaded is None:
            return
        current, load_ns = loaded

        options = {"num_predict": request["max_tokens"]} if isinstance(request.get("max_tokens"), int) else None
        prompt_text = "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        timings = make_timings(self.state.config, current.name, prompt_text, load_ns, options)
        tokens = answer_tokens(timings.eval_count)
        created = int(time.time())
        completion_id = f"chatcmpl-{created % 1000}"
        usage = {"prompt_tokens": timings.prompt_eval_count, "completion_tokens": timings.eval_count,
                 "total_tokens": timings.prompt_eval_count + timings.eval_count}
        finish = "length" if options and timings.eval_count >= options["num_predict"] else "stop"

        try:
            if not request.get("stream"):
                self._send_json(200, {
                    "id": completion_id, "object": "chat.completion", "created": created, "model": current.name,
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                                 "finish_reason": finish}],
                    "usage": usage,
                })
                return

            self._start_stream("text/event-stream")
            for index, token in enumerate(tokens):
                delta = {"role": "assistant", "content": token} if index == 0 else {"content": token}
                self._sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                           "model": current.name, "system_fingerprint": "fp_ollama",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            last = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": current.name, "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            if (request.get("stream_options") or {}).get("include_usage"):
                last["usage"] = usage
            self._sse(last)
            self._chunk(b"data: [DONE]\n\n")
            self._end_stream()
        finally:
            self.state.release(current)

    def _sse(self, payload: dict) -> None:
        self._chunk(b"data: " + json.dumps(payload, separators=WIRE_SEPARATORS).encode() + b"\n\n")


class BadRequest(Exception):
    """An invalid request body, which the handler rejects with 400 and {"error": ...}."""


def make_server(config: Config) -> ThreadingHTTPServer:
    """Build (but do not start) a stand-in server bound to config.host:config.port."""
    state = StandinState(config)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((config.host, config.port), handler)
    server.daemon_threads = True
    return server


# --- registry ------------------------------------------------------------


class RegistryHandler(BaseHTTPRequestHandler):
    """Serves fake models over the OCI distribution paths, for pulls with a host prefix."""

    protocol_version = "HTTP/1.1"
    server_version = "ollama-standin-registry"
    allowed: set[str] = set()
    model_size: Callable[[str], float]
    speed: float = 0.0
    blobs: dict[str, tuple[Callable[[], Iterator[bytes]], int]]
    blobs_lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("registry %s %s", self.address_string(), format % args)

    def _manifest_for(self, namespace: str, model: str, tag: str) -> dict | None:
        ref = f"{namespace}/{model}:{tag}"
        if self.allowed and ref not in self.allowed:
            return None
        name = ModelName(host="registry", namespace=namespace, model=model, tag=tag)
        manifest, readers = fake_manifest(name, int(self.model_size(ref)))
        with self.blobs_lock:
            for layer in [manifest["config"], *manifest["layers"]]:
                self.blobs[layer["digest"]] = (readers[layer["digest"]], layer["size"])
        return manifest

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        match = re.fullmatch(r"/v2/(.+)/([^/]+)/(manifests|blobs)/([^/]+)", self.path)
        if not match:
            self._reply(404, b'{"errors":[{"code":"NOT_FOUND"}]}')
            return
        namespace, model, kind, ref = match.groups()
        if kind == "manifests":
            manifest = self._manifest_for(namespace, model, ref)
            if manifest is None:
                self._reply(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                return
            self._reply(200, json.dumps(manifest).encode(), MANIFEST_MEDIA_TYPE)
            return
        with self.blobs_lock:
            entry = self.blobs.get(ref)
        if entry is None:
            self._reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            return
        self._send_blob(*entry)

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_blob(self, reader: Callable[[], Iterator[bytes]], size: int) -> None:
        offset = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            offset = min(int(match.group(1)), size)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {offset}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - offset))
        self.end_headers()
        if self.command == "HEAD":
            return
        started, sent, skipped = time.monotonic(), 0, 0
        try:
            for piece in reader():
                if skipped + len(piece) <= offset:
                    skipped += len(piece)
                    continue
                piece = piece[max(0, offset - skipped):]
                skipped = offset
                self.wfile.write(piece)
                sent += len(piece)
                if self.speed > 0:
                    delay = started + sent / self.speed - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            log.info("registry client closed the connection after %d bytes", sent)
            self.close_connection = True


def make_registry(env: dict[str, str] | None = None) -> ThreadingHTTPServer:
    """Build (but do not start) a stand-in registry from OLLAMA_STANDIN_REGISTRY_* settings."""
    env = dict(os.environ if env is None else env)
    host, port = parse_bind(env.get("OLLAMA_STANDIN_REGISTRY_HOST", ""), 5000)
    handler = type("BoundRegistryHandler", (RegistryHandler,), {
        "allowed": set(env.get("OLLAMA_STANDIN_REGISTRY_MODELS", "").split()),
        "model_size": staticmethod(parse_per_model(env.get("OLLAMA_STANDIN_MODEL_SIZE"), 8 * 1024 * 1024)),
        "speed": float(env.get("OLLAMA_STANDIN_REGISTRY_SPEED") or 0),
        "blobs": {},
    })
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


# --- command line --------------------------------------------------------


def client_get(path: str) -> Any:
    host, port = parse_bind(os.environ.get("OLLAMA_HOST", ""), DEFAULT_PORT)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    return json.loads(response.read())


def main(argv: list[str]) -> int:
    logging.basicConfig(level=os.environ.get("OLLAMA_STANDIN_LOG_LEVEL", "INFO"),
                        format="time=%(asctime)s level=%(levelname)s source=standin msg=%(message)s")
    command = argv[0] if argv else "help"
    if command in ("-v", "--version", "version"):
        version = os.environ.get("OLLAMA_STANDIN_VERSION", DEFAULT_VERSION)
        print(f"ollama version is {version}")
        return 0
    if command == "serve":
        config = Config.from_env()
        server = make_server(config)
        log.info("Listening on %s:%d (version %s, models %s)", config.host, server.server_address[1],
                 config.version, config.models_dir)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        return 0
    if command == "registry":
        registry = make_registry()
        log.info("registry listening on %s:%d", *registry.server_address[:2])
        try:
            registry.serve_forever()
        except KeyboardInterrupt:
            pass
        return 0
    if command in ("list", "ls", "ps"):
        try:
            models = client_get("/api/tags" if command != "ps" else "/api/ps")["models"]
        except OSError as exc:
            print(f"Error: could not connect to ollama app, is it running? ({exc})", file=sys.stderr)
            return 1
        print(f"{'NAME':40} {'SIZE':>14} {'PROCESSOR' if command == 'ps' else 'MODIFIED'}")
        for model in models:
            if command == "ps":
                share = model["size_vram"] / model["size"] if model["size"] else 0
                if share >= 1:
                    where = "100% GPU"
                elif share == 0:
                    where = "100% CPU"
                else:
                    where = f"{share:.0%} GPU"
            else:
                where = model["modified_at"]
            print(f"{model['name']:40} {model['size']:>14} {where}")
        return 0
    print("Usage: ollama serve | -v | list | ps | registry  (stand-in; see the module docstring)",
          file=sys.stderr)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
