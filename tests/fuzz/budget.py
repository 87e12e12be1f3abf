"""Hypothesis budget for the fuzz tests: bounded in `make test`, long in `make fuzz`.

`SYNCH_FUZZ=long` (what `make fuzz` sets) multiplies the examples by 50; SYNCH_FUZZ_EXAMPLES
sets them outright. Applied per test (`@fuzz()`), so other tests' settings are untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings

LONG = os.environ.get("SYNCH_FUZZ") == "long"


def fuzz(examples: int = 60) -> Callable[[Any], Any]:
    if os.environ.get("SYNCH_FUZZ_EXAMPLES"):
        examples = int(os.environ["SYNCH_FUZZ_EXAMPLES"])
    elif LONG:
        examples *= 50
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=not LONG,  # `make test` is repeatable; `make fuzz` explores
        database=None if not LONG else settings.default.database,
    )
