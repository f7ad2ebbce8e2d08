"""Handlers the dispatch tests run on real worker processes ("dispatch_handlers:<name>")."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import slither


def identity(items: list[Any], ctx: Any) -> list[Any]:
    return items


def double(items: list[int], ctx: Any) -> list[int]:
    return [x * 2 for x in items]


def keys(items: list[dict[str, Any]], ctx: Any) -> list[list[str]]:
    """Each dict's keys in the order the worker received them."""
    return [list(x) for x in items]


def pid(items: list[Any], ctx: Any) -> list[list[Any]]:
    """[worker pid, item] for each item."""
    return [[os.getpid(), x] for x in items]


def context(items: list[Any], ctx: Any) -> list[dict[str, Any]]:
    return [{"session_id": ctx.session_id, "stage": ctx.stage, "worker_id": ctx.worker_id,
             "attempt": ctx.attempt, "metadata": ctx.metadata} for _ in items]


def work(items: list[int], ctx: Any) -> list[Any]:
    """Doubles ints; metadata "raise": items that make the batch raise; "bad": items
    that fail alone (ItemError); "crash": items that SIGKILL the worker on the
    first attempt only; "crash_always": on every attempt; "sleep": seconds per batch."""
    m = ctx.metadata
    raise_on = set(m.get("raise", []))
    bad = set(m.get("bad", []))
    crash = set(m.get("crash", []))
    crash_always = set(m.get("crash_always", []))
    if m.get("sleep"):
        time.sleep(m["sleep"])
    out: list[Any] = []
    for x in items:
        if x in crash_always or (x in crash and ctx.attempt == 1):
            os.kill(os.getpid(), signal.SIGKILL)
        if x in raise_on:
            raise RuntimeError(f"poison item {x}")
        if x in bad:
            out.append(slither.ItemError(ValueError(f"bad item {x}")))
            continue
        out.append(x * 2)
    return out


def delayed(items: list[int], ctx: Any) -> list[int]:
    """Sleeps metadata["delays"][first item] seconds (default 0), then echoes."""
    delays = ctx.metadata.get("delays", {})
    time.sleep(delays.get(str(items[0]), 0.0))
    return items


def hang(items: list[Any], ctx: Any) -> list[Any]:
    """Hangs on the first attempt, answers on later ones."""
    if ctx.attempt == 1:
        time.sleep(3600)
    return items


def wrong_length(items: list[Any], ctx: Any) -> list[Any]:
    return items[:-1]


def unencodable(items: list[Any], ctx: Any) -> list[Any]:
    return [object() for _ in items]


def not_a_list(items: list[Any], ctx: Any) -> Any:
    return 42


def store_view(items: list[str], ctx: Any) -> list[Any]:
    """For each key of features.emb: [its name, and whether the view is read-only]."""
    store = ctx.store("features")
    same = store is ctx.store("features")
    out = []
    for key in items:
        row = store.get("emb", key)
        out.append([row["name"], same])
    return out


def no_store(items: list[Any], ctx: Any) -> list[Any]:
    ctx.store("nope")
    return items


def batch_of(items: list[Any], ctx: Any) -> list[list[Any]]:
    """Each item's whole batch, to see how items were batched."""
    return [list(items) for _ in items]
