"""The Ollama endpoint as the scripts see it: a base URL and an optional Bearer token."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """An Ollama API base URL, with the token an authenticating proxy in front of it needs."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    """Sent as "Authorization: Bearer ..."; never logged or printed."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, timeout: float = 300.0) -> ollama.Client:
        """Return the official Ollama client for this endpoint."""
        return ollama.Client(host=self.url, timeout=timeout, headers=self.headers())

    def http(self, timeout: float = 300.0) -> httpx.Client:
        """Return a plain HTTP client, for the OpenAI-compatible routes the Ollama client lacks."""
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=timeout)


def vram_share(process: Any) -> float:
    """Return the share of a loaded model that sits in GPU memory (0.0 to 1.0), from /api/ps."""
    size = process.size or 0
    if size <= 0:
        return 0.0
    return min(1.0, (process.size_vram or 0) / size)


def openai_chat(http: httpx.Client, model: str, prompt: str, max_tokens: int) -> dict:
    """POST /v1/chat/completions without streaming and return the decoded reply."""
    response = http.post("/v1/chat/completions", json={
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": False,
    })
    response.raise_for_status()
    return response.json()
