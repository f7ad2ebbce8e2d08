"""Handlers of the dispatch benchmark, for slither's workers and for the baselines."""

from __future__ import annotations

import time
from typing import Any

WORK_SECONDS = 20e-6


def identity(items: list[Any], ctx: Any) -> list[Any]:
    """slither: a batch in, the same batch out."""
    return items


def spin(item: Any) -> Any:
    """About 20 µs of pure-Python work, then the item back."""
    end = time.perf_counter() + WORK_SECONDS
    while time.perf_counter() < end:
        pass
    return item


def work20us(items: list[Any], ctx: Any) -> list[Any]:
    return [spin(x) for x in items]


def one(item: Any) -> Any:
    """The baselines' per-item identity."""
    return item


def one_batch(items: list[Any]) -> list[Any]:
    """The batch identity of the Ray baseline."""
    return items


def work_batch(items: list[Any]) -> list[Any]:
    return [spin(x) for x in items]
