"""The work of the pipe benchmark, shared by the slither pipe and its Pool.imap baseline."""

from __future__ import annotations

from typing import Any


def prepare(x: dict[str, Any]) -> dict[str, Any]:
    """The local stage: plain Python in the driving process."""
    return {"id": x["id"], "v": (x["id"] % 100) / 100.0}


def predict(x: dict[str, Any]) -> dict[str, Any]:
    """One item's "model": what the workers compute."""
    return {"id": x["id"], "score": x["v"] * 0.9 + 0.05}


def predict_batch(items: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """slither's worker handler: a batch in, as many results out."""
    return [predict(x) for x in items]


def accept(r: dict[str, Any]) -> bool:
    return r["score"] > 0.75


def review(r: dict[str, Any]) -> bool:
    return r["score"] > 0.5
