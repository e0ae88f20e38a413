#!/usr/bin/env python3
"""Check that the deployed Ollama endpoint serves a model from the GPU.

Checks, in order: /api/version, the expected models in /api/tags, one streamed and
one non-streamed /api/chat, an OpenAI-style /v1/chat/completions, and /api/ps
showing the model wholly in VRAM. A model that runs partly or wholly on the CPU
fails the test, because it still replies, only several times slower.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import ollama  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ops import cli, stack  # noqa: E402
from ops.api import Endpoint, openai_chat, vram_share  # noqa: E402

log = logging.getLogger("smoke_test")

DEFAULT_PROMPT = "Reply with one short sentence: what is the capital of France?"

EXIT_CODES = {
    cli.EXIT_OK: "every check passed",
    cli.EXIT_FAILED: "a check failed (the table says which), also for a 401 reply when the API key is "
                     "missing or wrong, and for a server with no models installed",
    **cli.EXIT_CODES_HELP,
}


class CheckFailed(Exception):
    """A check ran and found the endpoint wrong."""


class StopChecks(CheckFailed):
    """A check failed in a way that makes every later check fail too, so they are skipped."""

    def __init__(self, message: str, skip_reason: str):
        super().__init__(message)
        self.skip_reason = skip_reason


class Unreachable(Exception):
    """The endpoint sent no response at all, so later checks are skipped."""


@dataclass
class Outcome:
    name: str
    passed: bool | None  # None: skipped
    detail: str


def format_bytes(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def rate(eval_count: int | None, eval_duration_ns: int | None) -> str:
    if not eval_count or not eval_duration_ns:
        return "no timings"
    return f"{eval_count} tokens at {eval_count / (eval_duration_ns / 1e9):.1f} tokens/s"


class SmokeTest:
    """The checks, run in order against one endpoint."""

    def __init__(self, endpoint: Endpoint, models: list[str], prompt: str, max_tokens: int, timeout: float,
                 api_key_env: str = cli.DEFAULT_API_KEY_ENV):
        self.client = endpoint.client(timeout=timeout)
        self.http = endpoint.http(timeout=timeout)
        self.sends_api_key = bool(endpoint.api_key)
        self.api_key_env = api_key_env
        self.expected = models
        self.model = models[0] if models else ""
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.unreachable = False
        """True once a request got no response, so the remaining checks were skipped."""

    def unauthorized(self) -> StopChecks:
        """Return the error for a 401 reply, which every later request would get too."""
        if self.sends_api_key:
            message = (f"401: the endpoint rejected the API key; check the key in {self.api_key_env} "
                       f"or in the stack config (see --api-key-config)")
        else:
            message = (f"401: the endpoint needs an API key; set {self.api_key_env} or pass --api-key-env "
                       f"with the variable that holds it")
        return StopChecks(message, "skipped: the endpoint rejected the request (401)")

    def version(self) -> str:
        response = self.http.get("/api/version")
        if response.status_code == 401:
            raise self.unauthorized()
        response.raise_for_status()
        return f"Ollama {response.json()['version']} at {self.http.base_url}"

    def models(self) -> str:
        listed = [m.model for m in self.client.list().models]
        if not listed:
            raise CheckFailed("no models installed; the bootstrap's pull phase has not finished "
                              "(see wait_ready.py), or pulling failed")
        missing = [m for m in self.expected if m not in listed and f"{m}:latest" not in listed]
        if missing:
            raise CheckFailed(f"missing {', '.join(missing)}; installed: {', '.join(listed)}")
        if not self.model:
            self.model = listed[0]
        return ", ".join(listed)

    def chat_streamed(self) -> str:
        chunks = list(self.client.chat(self.model, messages=[{"role": "user", "content": self.prompt}],
                                       stream=True, options={"num_predict": self.max_tokens}))
        text = "".join(c.message.content or "" for c in chunks)
        final = chunks[-1] if chunks else None
        if final is None or not final.done:
            raise CheckFailed(f"the stream ended after {len(chunks)} chunks without a final done chunk")
        if not text.strip():
            raise CheckFailed("the streamed reply is empty")
        return f"{len(chunks)} chunks, {rate(final.eval_count, final.eval_duration)}"

    def chat(self) -> str:
        reply = self.client.chat(self.model, messages=[{"role": "user", "content": self.prompt}],
                                 options={"num_predict": self.max_tokens})
        content = (reply.message.content or "").strip()
        if not content:
            raise CheckFailed("the reply is empty")
        return f"{content[:60]!r}, {rate(reply.eval_count, reply.eval_duration)}"

    def openai(self) -> str:
        reply = openai_chat(self.http, self.model, self.prompt, self.max_tokens)
        choices = reply.get("choices") or []
        content = ((choices[0].get("message") or {}).get("content") or "").strip() if choices else ""
        if not content:
            raise CheckFailed(f"no message content in the reply: {str(reply)[:200]}")
        usage = reply.get("usage") or {}
        return f"{content[:60]!r}, {usage.get('completion_tokens', '?')} completion tokens"

    def gpu(self) -> str:
        loaded = {p.model: p for p in self.client.ps().models}
        process = loaded.get(self.model) or loaded.get(f"{self.model}:latest")
        if process is None:
            raise CheckFailed(f"{self.model} is not loaded after the chats (loaded: {', '.join(loaded) or 'none'}); "
                              f"check OLLAMA_KEEP_ALIVE")
        share = vram_share(process)
        if share == 0:
            raise CheckFailed(f"{self.model} runs on the CPU (size_vram 0 of {process.size} bytes): Ollama found "
                              f"no usable GPU. Check `nvidia-smi` and that nvidia_uvm is loaded, then restart "
                              f"ollama.service")
        if share < 1:
            raise CheckFailed(f"{self.model} is only {share:.0%} in VRAM ({process.size_vram} of {process.size} "
                              f"bytes), the rest runs on the CPU: pick a smaller model or a GPU with more memory")
        return f"{self.model} 100% in VRAM ({format_bytes(process.size_vram)})"

    def checks(self) -> list[tuple[str, Callable[[], str], bool]]:
        """Return (name, check, whether the check chats with self.model), in the order they run."""
        return [
            ("version", self.version, False),
            ("models", self.models, False),
            ("chat, streamed", self.chat_streamed, True),
            ("chat", self.chat, True),
            ("/v1/chat/completions", self.openai, True),
            ("model in VRAM", self.gpu, True),
        ]

    def run(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        skip_reason = ""
        for name, check, needs_model in self.checks():
            if skip_reason:
                outcomes.append(Outcome(name, None, skip_reason))
                continue
            if needs_model and not self.model:
                # The models check failed before it could pick one, and Ollama rejects an empty name.
                outcomes.append(Outcome(name, None, "skipped: no model to chat with"))
                continue
            try:
                outcomes.append(Outcome(name, True, check()))
            except StopChecks as exc:
                outcomes.append(Outcome(name, False, str(exc)))
                skip_reason = exc.skip_reason
            except CheckFailed as exc:
                outcomes.append(Outcome(name, False, str(exc)))
            except ollama.ResponseError as exc:
                if exc.status_code == 401:
                    stop = self.unauthorized()
                    outcomes.append(Outcome(name, False, str(stop)))
                    skip_reason = stop.skip_reason
                else:
                    outcomes.append(Outcome(name, False, f"Ollama returned an error: {exc}"))
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 401:
                    stop = self.unauthorized()
                    outcomes.append(Outcome(name, False, str(stop)))
                    skip_reason = stop.skip_reason
                else:
                    outcomes.append(Outcome(name, False,
                                            f"HTTP {exc.response.status_code}: {exc.response.text[:200]}"))
            except (httpx.TransportError, ConnectionError) as exc:
                outcomes.append(Outcome(name, False, f"cannot reach {self.http.base_url}: {exc}"))
                skip_reason = "skipped: endpoint unreachable"
                self.unreachable = True
            log.debug("check %s: %s", name, outcomes[-1])
        return outcomes


def outcome_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="Smoke test")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    labels = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]SKIP[/]"}
    for outcome in outcomes:
        table.add_row(outcome.name, labels[outcome.passed], outcome.detail)
    return table


def default_models(args: argparse.Namespace) -> list[str]:
    """Return --model values, else the stack's models output when the endpoint comes from the stack."""
    if args.model:
        return args.model
    if args.url:
        return []
    try:
        value = stack.pick(stack.outputs(args.stack), stack.MODELS_KEYS, "models")
    except stack.StackError as exc:
        log.info("checking whichever model is installed: %s", exc)
        return []
    return list(value) if isinstance(value, list) else str(value).split()


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__, EXIT_CODES)
    cli.add_endpoint_args(parser)
    cli.add_ssh_args(parser)
    parser.add_argument("--model", metavar="NAME", action="append",
                        help="model that must be installed; repeat for several, the first is chatted with "
                             "(default: the stack's models output, else the first installed model)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt for the chat checks")
    parser.add_argument("--max-tokens", metavar="N", type=int, default=64,
                        help="tokens to generate per chat, at most (default: %(default)s)")
    parser.add_argument("--timeout", metavar="SECONDS", type=cli.positive_seconds, default=600.0,
                        help="seconds per request; the first chat may load the model from disk "
                             "(default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    console = Console()
    return cli.run_with_exit_codes(lambda: run_checks(args, console), log, console,
                                   ssh_error_prefix="SSH tunnel failed")


def run_checks(args: argparse.Namespace, console: Console) -> int:
    """Run the checks against the endpoint the options select, print the table and return the exit code."""
    models = default_models(args)
    with cli.open_endpoint(args, timeout=args.timeout) as endpoint:
        smoke = SmokeTest(endpoint, models, args.prompt, args.max_tokens, args.timeout,
                          api_key_env=args.api_key_env)
        outcomes = smoke.run()

    console.print(outcome_table(outcomes))
    if smoke.unreachable:
        return cli.EXIT_UNREACHABLE
    if all(o.passed for o in outcomes):
        console.print("[bold green]All checks passed.[/]")
        return cli.EXIT_OK
    return cli.EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
