"""Mock runs of the program shared between tests, because each run takes a fraction of a second."""

from __future__ import annotations

import functools
import json
from typing import Any

from scripts.plan import PlanResult, plan_stack


def cached_plan(stack: str = "dev", **overrides: Any) -> PlanResult:
    """Return plan_stack's result for these arguments, running the program once per combination.

    Callers must not modify the result. A test that patches the program's modules must call
    plan_stack itself.
    """
    return _cached(stack, json.dumps(overrides, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _cached(stack: str, overrides_json: str) -> PlanResult:
    overrides = {key: tuple(value) if key == "mock_zones" else value
                 for key, value in json.loads(overrides_json).items()}
    return plan_stack(stack, **overrides)
