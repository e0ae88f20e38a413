"""bench.py against the stand-in server, whose reported timings are known in advance."""

from __future__ import annotations

import csv
import json
import logging

import ollama
import pytest

import bench
import ollama_server as standin
from ops import cli

# Stand-in decode speeds per model; eval_duration = eval_count / rate exactly, in ns.
EVAL_RATES = "tiny:1b=120,qwen3:8b=40"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture
def server(start_standin):
    running = start_standin(
        gpu="on",
        eval_count=24,
        eval_rate=standin.parse_per_model(EVAL_RATES, 10),
        prompt_eval_rate=standin.parse_per_model(None, 400),
        model_size=standin.parse_per_model("tiny:1b=50000,qwen3:8b=200000", 1),
        load_seconds=standin.parse_per_model(None, 0.05),
    )
    client = ollama.Client(host=running.url)
    client.pull("tiny:1b")
    client.pull("qwen3:8b")
    running.sizes = {m.model: m.size for m in client.list().models}
    return running


def run_bench(server, tmp_path, *extra):
    # The PNG is checked once, in test_csv_and_png_written, because drawing it costs about a second.
    return bench.main(["--url", server.url, "--runs", "2", "--output", str(tmp_path / "out" / "result.json"),
                       "--no-plot", *extra])


def test_figures_from_known_timings(server, tmp_path, capsys):
    code = run_bench(server, tmp_path, "--bandwidth", "600")
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    summary = {s["model"]: s for s in data["summary"]}
    qwen = summary["qwen3:8b"]
    size = server.sizes["qwen3:8b"]

    assert code == cli.EXIT_OK
    assert len(data["runs"]) == 2 * 2 * len(bench.DEFAULT_PROMPTS)
    assert summary["tiny:1b"]["eval_rate_mean_tps"] == pytest.approx(120.0)
    assert qwen["eval_rate_mean_tps"] == pytest.approx(40.0)
    assert qwen["prompt_eval_rate_mean_tps"] == pytest.approx(400.0, rel=1e-6)
    assert qwen["first_load_s"] == pytest.approx(0.05)
    assert qwen["warm_load_median_s"] == pytest.approx(0.012)
    assert qwen["reloads"] == 0
    assert qwen["size_bytes"] == size
    assert qwen["bandwidth_limit_tps"] == pytest.approx(600e9 / size)
    assert qwen["percent_of_limit"] == pytest.approx(100 * 40.0 / (600e9 / size))
    assert "40.00" in out
    assert "120.00" in out
    assert "wrote " in out
    assert not (tmp_path / "out" / "result.png").exists()


def test_a10_limit_for_32b_model():
    """19 GB read per token on a 600 GB/s A10 allows about 31.6 tokens/s at most."""
    assert bench.bandwidth_limit(600, 19_000_000_000) == pytest.approx(31.58, abs=0.01)


def test_csv_and_png_written(server, tmp_path):
    code = bench.main(["--url", server.url, "--runs", "1", "--model", "qwen3:8b",
                       "--output", str(tmp_path / "r.csv")])
    with (tmp_path / "r.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    with (tmp_path / "r-summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    png = (tmp_path / "r.png").read_bytes()

    assert code == cli.EXIT_OK
    assert len(rows) == len(bench.DEFAULT_PROMPTS)
    assert {r["model"] for r in rows} == {"qwen3:8b"}
    assert float(rows[0]["eval_rate_tps"]) == pytest.approx(40.0)
    assert float(rows[0]["eval_duration_s"]) == pytest.approx(0.6)
    assert [s["model"] for s in summary] == ["qwen3:8b"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 5000


def test_unload_between_runs_warns(server, tmp_path, caplog):
    """keep_alive 0 unloads after each request, so every later run pays the load again."""
    caplog.set_level(logging.WARNING)

    code = run_bench(server, tmp_path, "--model", "tiny:1b", "--keep-alive", "0", "--unload-threshold", "0.03")
    summary = json.loads((tmp_path / "out" / "result.json").read_text())["summary"][0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert code == cli.EXIT_OK
    assert summary["reloads"] == 2 * len(bench.DEFAULT_PROMPTS) - 1
    assert any("unloaded between runs" in w for w in warnings)


def test_missing_model_fails(server, tmp_path):
    assert run_bench(server, tmp_path, "--model", "nope:1b") == cli.EXIT_FAILED
