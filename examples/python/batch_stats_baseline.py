"""batch_stats in pure Python: Welford statistics over 2,000 datasets, 50 poison.

unsafe_threaded: threads update one shared running accumulator (the overall
statistics) value by value; safe_python: one accumulator per batch, merged at
the end (Chan et al.); multiprocessing_pool: the same batches in processes.
Every mode catches a poison dataset's error and skips it.
"""

from __future__ import annotations

import math
import sys
from concurrent.futures import ThreadPoolExecutor

from baseline_harness import PoolMode, chunks, main
from batch_stats_worker import Welford, dataset_stats

BATCH = 32


def stats_batch(batch: list) -> tuple[dict, list, Welford]:
    """One batch with its own state: per-dataset results, skipped ids, overall."""
    per, skipped, overall = {}, [], Welford()
    for ds in batch:
        try:
            acc = dataset_stats(ds["values"])
        except TypeError:
            skipped.append(ds["id"])
            continue
        per[ds["id"]] = (acc.n, acc.mean, acc.m2)
        overall.merge(acc)
    return per, skipped, overall


def merge(parts) -> dict:
    per, skipped, overall = {}, [], Welford()
    for part_per, part_skipped, part_overall in parts:
        per.update(part_per)
        skipped.extend(part_skipped)
        overall.merge(part_overall)
    return {"per": per, "skipped": skipped, "overall": (overall.n, overall.mean, overall.m2)}


def unsafe_threaded(data: dict, workers: int) -> dict:
    per: dict = {}
    skipped: list = []
    overall = Welford()

    def work(batch: list) -> None:
        for ds in batch:
            acc = Welford()
            try:
                for x in ds["values"]:
                    acc.add(x)
                    overall.add(x)  # the naive running total, shared by every thread
            except TypeError:
                skipped.append(ds["id"])
                continue
            per[ds["id"]] = (acc.n, acc.mean, acc.m2)

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(work, chunks(data["datasets"], BATCH)))
    return {"per": per, "skipped": skipped, "overall": (overall.n, overall.mean, overall.m2)}


def safe_python(data: dict, workers: int) -> dict:
    with ThreadPoolExecutor(workers) as ex:
        return merge(ex.map(stats_batch, chunks(data["datasets"], BATCH)))


def multiprocessing_pool(data: dict, pool) -> dict:
    return merge(pool.imap(stats_batch, chunks(data["datasets"], BATCH)))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check(data: dict, out: dict) -> dict[str, bool]:
    """Against a two-pass computation (math.fsum) of the healthy datasets."""
    poison = set(data["poison"])
    healthy = [ds for ds in data["datasets"] if ds["id"] not in poison]
    every = [x for ds in healthy for x in ds["values"]]
    mean = math.fsum(every) / len(every)
    m2 = math.fsum((x - mean) ** 2 for x in every)
    per_ok = set(out["per"]) == {ds["id"] for ds in healthy}
    if per_ok:
        for ds in healthy:
            n, m, _ = out["per"][ds["id"]]
            if n != len(ds["values"]) or not close(m, math.fsum(ds["values"]) / n):
                per_ok = False
                break
    n, overall_mean, overall_m2 = out["overall"]
    return {
        "every healthy dataset has its statistics": per_ok,
        "poison datasets skipped, and only they": sorted(out["skipped"]) == sorted(poison),
        "overall count": n == len(every),
        "overall mean and variance": close(overall_mean, mean) and close(overall_m2, m2),
    }


MODES = {
    "unsafe_threaded": unsafe_threaded,
    "safe_python": safe_python,
    "multiprocessing_pool": PoolMode(multiprocessing_pool),
}

if __name__ == "__main__":
    sys.exit(main(__doc__, MODES, check, lambda data: len(data["datasets"])))
