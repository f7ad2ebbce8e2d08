"""batch_stats worker: Welford running statistics per dataset.

`welford(items, ctx)` returns {"id", "sensor", "n", "mean", "m2"} per dataset;
the driver merges them (Chan et al.'s parallel combination) into statistics
per sensor and overall. A poison dataset fails alone: its result is a
`slither.ItemError`, which the job's `on_error: skip` policy turns into a
skipped item while the rest of its batch goes on.
"""

from __future__ import annotations

from typing import Iterable

import slither


class Welford:
    """Running count, mean and sum of squared deviations (M2)."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.n, self.mean, self.m2 = n, mean, m2

    def add(self, x: float) -> None:
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            raise TypeError(f"not a number: {x!r}")
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def merge(self, other: "Welford") -> None:
        """Adds another accumulator's data (Chan et al.)."""
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


def dataset_stats(values: Iterable) -> Welford:
    acc = Welford()
    for x in values:
        acc.add(x)
    return acc


def welford(items: list, ctx) -> list:
    """The Python stage: one accumulator per dataset; a poison one fails alone."""
    out: list = []
    for ds in items:
        try:
            acc = dataset_stats(ds["values"])
        except TypeError as e:
            out.append(slither.ItemError(f"dataset {ds['id']}: {e}", type="TypeError"))
            continue
        out.append({"id": ds["id"], "sensor": ds["sensor"], "n": acc.n, "mean": acc.mean,
                    "m2": acc.m2})
    return out
