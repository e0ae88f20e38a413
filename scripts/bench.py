#!/usr/bin/env python3
"""Benchmark decode and prompt speed of the endpoint's models.

For each model, runs a fixed prompt set N times through /api/chat and reports, from
Ollama's own timings: eval rate (eval_count / eval_duration), prompt eval rate, load
duration and total duration. Prints a table, writes every run to CSV or JSON and
draws a PNG. Each model's decode rate is also shown as a share of the limit that
memory bandwidth sets. Every generated token reads all weights once, so a GPU with
B GB/s cannot decode a model of S GB faster than B / S tokens/s.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import ollama  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from ops import cli  # noqa: E402
from ops.api import Endpoint  # noqa: E402

log = logging.getLogger("bench")

# NVIDIA A10 memory bandwidth (NVIDIA A10 datasheet: 600 GB/s).
A10_BANDWIDTH_GBPS = 600.0

# Fixed prompts, so runs on different days and deployments compare. Each requests a
# long reply, so num_predict, not the model, decides when decoding stops.
DEFAULT_PROMPTS = (
    "Explain how a transformer language model generates text, step by step, in detail.",
    "Write a detailed guide to setting up a reproducible Python project with tests and CI.",
    "Describe the history of the printing press and its effects on European society.",
)

EXIT_CODES = {
    cli.EXIT_OK: "every run finished",
    cli.EXIT_FAILED: "a request failed or a model is not installed",
    **cli.EXIT_CODES_HELP,
}


@dataclass
class Run:
    """One chat request's timings, converted from Ollama's nanoseconds."""

    model: str
    run: int
    prompt: int
    eval_count: int
    eval_duration_s: float
    eval_rate_tps: float
    prompt_eval_count: int
    prompt_eval_duration_s: float
    prompt_eval_rate_tps: float
    load_duration_s: float
    total_duration_s: float
    reloaded: bool
    """True when the load duration shows the model was loaded again for this request."""


@dataclass
class Summary:
    """Per-model figures over all runs."""

    model: str
    requests: int
    size_bytes: int
    eval_rate_mean_tps: float
    eval_rate_min_tps: float
    eval_rate_max_tps: float
    prompt_eval_rate_mean_tps: float
    first_load_s: float
    warm_load_median_s: float
    total_mean_s: float
    bandwidth_limit_tps: float
    percent_of_limit: float
    reloads: int


def per_second(count: int | None, duration_ns: int | None) -> float:
    if not count or not duration_ns:
        return 0.0
    return count / (duration_ns / 1e9)


def make_run(model: str, run: int, prompt: int, reply, first: bool, unload_threshold_s: float) -> Run:
    """Convert one chat reply's timings; a load above the threshold after the first request is a reload."""
    load_s = (reply.load_duration or 0) / 1e9
    return Run(
        model=model,
        run=run,
        prompt=prompt,
        eval_count=reply.eval_count or 0,
        eval_duration_s=(reply.eval_duration or 0) / 1e9,
        eval_rate_tps=per_second(reply.eval_count, reply.eval_duration),
        prompt_eval_count=reply.prompt_eval_count or 0,
        prompt_eval_duration_s=(reply.prompt_eval_duration or 0) / 1e9,
        prompt_eval_rate_tps=per_second(reply.prompt_eval_count, reply.prompt_eval_duration),
        load_duration_s=load_s,
        total_duration_s=(reply.total_duration or 0) / 1e9,
        reloaded=not first and load_s > unload_threshold_s,
    )


def bandwidth_limit(bandwidth_gbps: float, size_bytes: int) -> float:
    """Return the decode ceiling in tokens/s when each token reads `size_bytes` of weights.

    NOTE: this takes the model file size as the bytes read per token. That is close for
    dense models; a mixture-of-experts model reads only its active experts, so its
    true ceiling is higher than this figure.
    """
    if size_bytes <= 0:
        return 0.0
    return bandwidth_gbps * 1e9 / size_bytes


def summarize(model: str, runs: list[Run], size_bytes: int, bandwidth_gbps: float) -> Summary:
    eval_rates = [r.eval_rate_tps for r in runs]
    warm_loads = [r.load_duration_s for r in runs[1:]] or [0.0]
    limit = bandwidth_limit(bandwidth_gbps, size_bytes)
    mean_rate = statistics.fmean(eval_rates)
    return Summary(
        model=model,
        requests=len(runs),
        size_bytes=size_bytes,
        eval_rate_mean_tps=mean_rate,
        eval_rate_min_tps=min(eval_rates),
        eval_rate_max_tps=max(eval_rates),
        prompt_eval_rate_mean_tps=statistics.fmean(r.prompt_eval_rate_tps for r in runs),
        first_load_s=runs[0].load_duration_s,
        warm_load_median_s=statistics.median(warm_loads),
        total_mean_s=statistics.fmean(r.total_duration_s for r in runs),
        bandwidth_limit_tps=limit,
        percent_of_limit=100.0 * mean_rate / limit if limit else 0.0,
        reloads=sum(r.reloaded for r in runs),
    )


def summary_table(summaries: list[Summary], bandwidth_gbps: float) -> Table:
    table = Table(title=f"Benchmark (bandwidth limit at {bandwidth_gbps:g} GB/s)")
    for name in ("model", "size GB", "eval tok/s", "min–max", "prompt tok/s", "first load s",
                 "warm load s", "total s", "limit tok/s", "% of limit", "reloads"):
        table.add_column(name, justify="left" if name == "model" else "right", no_wrap=name == "model")
    for s in summaries:
        table.add_row(
            s.model, f"{s.size_bytes / 1e9:.2f}", f"{s.eval_rate_mean_tps:.2f}",
            f"{s.eval_rate_min_tps:.1f}–{s.eval_rate_max_tps:.1f}", f"{s.prompt_eval_rate_mean_tps:.1f}",
            f"{s.first_load_s:.2f}", f"{s.warm_load_median_s:.3f}", f"{s.total_mean_s:.2f}",
            f"{s.bandwidth_limit_tps:.1f}", f"{s.percent_of_limit:.1f}%",
            f"[red]{s.reloads}[/]" if s.reloads else "0",
        )
    return table


def write_results(path: Path, runs: list[Run], summaries: list[Summary], meta: dict) -> list[Path]:
    """Write runs and summaries as JSON (one file) or CSV (runs, plus a -summary.csv); return the paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({**meta, "summary": [asdict(s) for s in summaries],
                                    "runs": [asdict(r) for r in runs]}, indent=2))
        return [path]
    summary_path = path.with_name(f"{path.stem}-summary.csv")
    for target, rows in ((path, [asdict(r) for r in runs]), (summary_path, [asdict(s) for s in summaries])):
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return [path, summary_path]


def plot(path: Path, summaries: list[Summary], runs: list[Run], bandwidth_gbps: float, title: str) -> None:
    """Draw decode and prompt rates per model, with each model's bandwidth limit marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.model for s in summaries]
    positions = range(len(names))
    figure, (decode, prompt) = plt.subplots(1, 2, figsize=(max(8, 2.5 * len(names) + 4), 4.8))

    for index, summary in enumerate(summaries):
        rates = [r.eval_rate_tps for r in runs if r.model == summary.model]
        decode.bar(index, summary.eval_rate_mean_tps, color="tab:blue")
        decode.scatter([index] * len(rates), rates, color="black", s=10, zorder=3)
        decode.annotate(f"{summary.eval_rate_mean_tps:.1f} tok/s\n{summary.percent_of_limit:.0f}% of limit",
                        (index, summary.eval_rate_mean_tps), ha="center", va="bottom", fontsize=8)
    limits = [s.bandwidth_limit_tps for s in summaries]
    decode.scatter(list(positions), limits, marker="_", s=900, color="tab:red",
                   label=f"limit at {bandwidth_gbps:g} GB/s", zorder=4)
    top = max([s.eval_rate_max_tps for s in summaries] + [0.0])
    if limits and max(limits) > 5 * max(top, 1e-9):
        decode.set_yscale("log")
    decode.set_xticks(list(positions), names, rotation=15)
    decode.set_ylabel("decode rate (tokens/s)")
    decode.set_title("Decode (eval) rate")
    decode.legend(loc="upper right", fontsize=8)

    prompt.bar(list(positions), [s.prompt_eval_rate_mean_tps for s in summaries], color="tab:green")
    prompt.set_xticks(list(positions), names, rotation=15)
    prompt.set_ylabel("prompt rate (tokens/s)")
    prompt.set_title("Prompt eval rate")

    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def read_prompts(path: Path | None) -> list[str]:
    if path is None:
        return list(DEFAULT_PROMPTS)
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} contains no prompts (one per line)")
    return prompts


def bench(endpoint: Endpoint, args: argparse.Namespace, console: Console) -> int:
    client = endpoint.client(timeout=args.timeout)
    installed = {m.model: m.size or 0 for m in client.list().models}
    models = args.model or sorted(installed)
    missing = [m for m in models if m not in installed]
    if missing or not models:
        log.error("not installed: %s; installed: %s", ", ".join(missing) or "(no model given)",
                  ", ".join(installed) or "none")
        return cli.EXIT_FAILED
    prompts = read_prompts(args.prompts)

    runs: list[Run] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("benchmark", total=len(models) * args.runs * len(prompts))
        for model in models:
            for run in range(1, args.runs + 1):
                for prompt_index, prompt in enumerate(prompts, start=1):
                    progress.update(task, description=f"{model} run {run} prompt {prompt_index}")
                    reply = client.chat(model, messages=[{"role": "user", "content": prompt}],
                                        options={"num_predict": args.num_predict}, keep_alive=args.keep_alive)
                    first = run == 1 and prompt_index == 1
                    measured = make_run(model, run, prompt_index, reply, first, args.unload_threshold)
                    if measured.reloaded:
                        log.warning("%s was loaded again for run %d prompt %d (load_duration %.2f s): it was "
                                    "unloaded between runs. Raise --keep-alive or OLLAMA_KEEP_ALIVE, or check "
                                    "that another model did not evict it.", model, run, prompt_index,
                                    measured.load_duration_s)
                    runs.append(measured)
                    progress.advance(task)

    summaries = [summarize(m, [r for r in runs if r.model == m], installed[m], args.bandwidth) for m in models]
    console.print(summary_table(summaries, args.bandwidth))

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or Path(f"bench-{stamp}.csv")
    meta = {"endpoint": endpoint.url, "finished_at": stamp, "bandwidth_gbps": args.bandwidth,
            "runs_per_model": args.runs, "num_predict": args.num_predict, "keep_alive": args.keep_alive,
            "prompts": prompts}
    written = write_results(output, runs, summaries, meta)
    if not args.no_plot:
        plot_path = args.plot or output.with_suffix(".png")
        plot(plot_path, summaries, runs, args.bandwidth, f"{endpoint.url}, {stamp}, {args.runs} runs x "
                                                         f"{len(prompts)} prompts, num_predict {args.num_predict}")
        written.append(plot_path)
    for path in written:
        console.print(f"wrote {path}")
    return cli.EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__, EXIT_CODES)
    cli.add_endpoint_args(parser)
    cli.add_ssh_args(parser)
    parser.add_argument("--model", metavar="NAME", action="append",
                        help="model to benchmark; repeat for several (default: every installed model)")
    parser.add_argument("--runs", metavar="N", type=int, default=3, help="runs over the prompt set per model (default: %(default)s)")
    parser.add_argument("--prompts", metavar="FILE", type=Path, help="file with one prompt per line (default: three built-in prompts)")
    parser.add_argument("--num-predict", metavar="N", type=int, default=256,
                        help="tokens to generate per request, at most (default: %(default)s)")
    parser.add_argument("--keep-alive", metavar="DURATION", default="30m",
                        help="how long Ollama keeps each model loaded after a request, as an Ollama "
                             "duration such as 30m or -1 for forever (default: %(default)s)")
    parser.add_argument("--bandwidth", metavar="GB_PER_S", type=cli.positive_number, default=A10_BANDWIDTH_GBPS,
                        help="GPU memory bandwidth in GB/s, for the decode limit (default: %(default)s, NVIDIA A10)")
    parser.add_argument("--unload-threshold", metavar="SECONDS", type=cli.non_negative_seconds, default=1.0,
                        help="seconds of load_duration after a model's first request that count as a reload "
                             "(default: %(default)s)")
    parser.add_argument("--output", metavar="FILE", type=Path,
                        help="results file, .csv (plus NAME-summary.csv) or .json (default: bench-UTCTIME.csv)")
    parser.add_argument("--plot", metavar="FILE", type=Path, help="PNG chart (default: the results file with .png)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    parser.add_argument("--timeout", metavar="SECONDS", type=cli.positive_seconds, default=900.0,
                        help="seconds per request; a cold model loads from disk first (default: %(default)s)")
    return parser


def run_bench(args: argparse.Namespace, console: Console) -> int:
    """Open the endpoint and benchmark it; return the exit code for errors of the requests or results."""
    try:
        with cli.open_endpoint(args, timeout=args.timeout) as endpoint:
            return bench(endpoint, args, console)
    except ollama.ResponseError as exc:
        log.error("Ollama returned an error: %s", exc)
        return cli.EXIT_FAILED
    except (httpx.TransportError, ConnectionError) as exc:
        log.error("cannot reach the endpoint: %s", exc)
        return cli.EXIT_UNREACHABLE
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return cli.EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    cli.setup_logging(args.verbose)
    console = Console()
    return cli.run_with_exit_codes(lambda: run_bench(args, console), log, console,
                                   ssh_error_prefix="SSH tunnel failed")


if __name__ == "__main__":
    sys.exit(main())
