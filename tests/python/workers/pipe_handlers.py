"""Handlers the pipe tests run as python stages on real worker processes ("pipe_handlers:<name>")."""

from __future__ import annotations

import os
import signal
from typing import Any

import slither


def context(items: list[Any], ctx: Any) -> list[dict[str, Any]]:
    return [{"value": x, "pipe": ctx.pipe, "stage": ctx.stage, "session_id": ctx.session_id,
             "metadata": ctx.metadata} for x in items]


def score(items: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """{"id": i, ...} -> the item with "score": (i % 10) / 10."""
    return [{**x, "score": (x["id"] % 10) / 10} for x in items]


def work(items: list[dict[str, Any]], ctx: Any) -> list[Any]:
    """Marks {"id": i} as scored; metadata "bad": ids that fail alone (ItemError),
    "raise": ids that fail their batch, "crash": ids that SIGKILL the worker on
    the first attempt."""
    m = ctx.metadata
    bad, raise_on, crash = set(m.get("bad", [])), set(m.get("raise", [])), set(m.get("crash", []))
    out: list[Any] = []
    for x in items:
        i = x["id"]
        if i in crash and ctx.attempt == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        if i in raise_on:
            raise RuntimeError(f"poison {i}")
        out.append(slither.ItemError(ValueError(f"bad {i}")) if i in bad else {**x, "scored": True})
    return out
